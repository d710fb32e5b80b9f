"""Authors' regular expressions: compiled once checked, matched in linear time, and how long a
match can be.

Patterns from requests, blueprints and skills run in RE2 (`google-re2`), whose matching time is
linear in the text whatever the pattern, so no pattern can freeze the gateway the way `(a|a){1,24}b`
freezes a backtracking engine. RE2 has no backreferences or lookaround: such patterns are refused
when the blueprint is checked.
"""

from __future__ import annotations

import functools
import importlib
import re
from typing import Any

import re2

MAX_WIDTH = 1000
# The parser behind `re` knows each pattern's longest match; it has no public name.
_parser: Any = importlib.import_module("re._parser")
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print the refused pattern, which may be a vault secret


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """The compiled RE2 pattern (`search`, `finditer`), or ValueError saying why it is not one."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except (re2.error, TypeError, OverflowError) as exc:
        reason = (
            exc.args[0].decode(errors="replace")
            if exc.args and isinstance(exc.args[0], bytes)
            else exc
        )
        raise ValueError(f"not a valid regular expression (RE2 syntax): {reason}") from exc


def max_width(pattern: str) -> int | None:
    """The most characters one match can span; None when unbounded, above MAX_WIDTH, or beyond
    what Python's parser reads."""
    try:
        width = int(_parser.parse(pattern).getwidth()[1])
    except (re.error, OverflowError, RecursionError):
        return None
    return width if width <= MAX_WIDTH else None
