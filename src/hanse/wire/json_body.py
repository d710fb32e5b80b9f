"""Refuses JSON that parsers read differently, before a body is validated.

The validating parser (pydantic's) keeps the last of duplicate keys, where others keep the first, and
reads a lone surrogate escape or an overlong number in its own way: a guard, a log or an upstream
could then see another request than the one validated. Such bodies are refused with a code that says
what is wrong: VALIDATION_4001 for duplicate keys, lone surrogates and broken JSON, VALIDATION_4004
for a number no float or 64-bit integer can hold.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from hanse.errors import INVALID_JSON, OUT_OF_RANGE, HanseError


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def check_json(body: bytes) -> None:
    """Raise a catalog error when `body` is not JSON that every parser reads the same way."""
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _decode_error(str(exc)) from None
    try:
        json.loads(body, object_pairs_hook=_unique)
    except _DuplicateKey as exc:
        raise HanseError(
            INVALID_JSON,
            f"The request body has the key `{exc.key[:64]}` twice in one object.",
            details={"duplicate_key": exc.key[:64]},
        ) from None
    except ValueError:  # an integer with more digits than Python converts (4300)
        raise _out_of_range() from None


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return value


def _decode_error(reason: str) -> HanseError:
    if "not valid UTF-8" in reason:
        return HanseError(
            INVALID_JSON, "The request body is not UTF-8.", details={"reason": "not UTF-8"}
        )
    if "surrogate" in reason:
        return HanseError(
            INVALID_JSON,
            "The request body holds a lone UTF-16 surrogate escape (such as `\\ud800`), "
            "which is no character.",
            details={"reason": "lone surrogate"},
        )
    if "number" in reason:
        return _out_of_range()
    return HanseError(INVALID_JSON, f"The request body is not valid JSON: {reason[:200]}.")


def _out_of_range() -> HanseError:
    return HanseError(
        OUT_OF_RANGE,
        "The request body holds a number too large for a 64-bit float or integer.",
        details={"reason": "number out of range"},
    )
