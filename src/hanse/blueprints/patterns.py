"""Authors' regular expressions: compiled once checked, and how long a match can be."""

from __future__ import annotations

import functools
import importlib
import re
from typing import Any

MAX_WIDTH = 1000
# The parser behind `re` knows each pattern's longest match; it has no public name.
_parser: Any = importlib.import_module("re._parser")


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The compiled pattern, or ValueError saying why it is not one."""
    try:
        return re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from exc


def max_width(pattern: str) -> int | None:
    """The most characters one match can span; None when unbounded or above MAX_WIDTH."""
    width = int(_parser.parse(pattern).getwidth()[1])
    return width if width <= MAX_WIDTH else None
