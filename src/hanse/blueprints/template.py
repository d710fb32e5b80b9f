"""`{{name}}` substitution, and nothing else: text in, text out, one pass (values are not rescanned)."""

from __future__ import annotations

import re
from collections.abc import Mapping

NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")


def names(text: str) -> list[str]:
    """The variables `text` uses, in order of first use."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(text)))


def render(text: str, values: Mapping[str, str]) -> str:
    """`text` with each `{{name}}` replaced by its value (every name must have one)."""
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)
