"""JSON Schema validation that stays inside the schema and runs patterns in linear time.

A client's schema is hostile input: jsonschema's default resolver fetches any remote `$ref`
(http, https, file, ftp, on the event loop, with no timeout), and its `pattern` keywords run in
Python's backtracking `re`. Here references resolve within the schema only (an empty registry:
anything else is an unresolvable reference, reported as a problem), and `pattern` and
`patternProperties` run in RE2 (hanse.blueprints.patterns).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from jsonschema import ValidationError
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from jsonschema.validators import extend, validator_for
from referencing import Registry
from referencing.exceptions import Unresolvable

from hanse.blueprints.patterns import compile_pattern

_NO_REMOTE: Registry[Any] = Registry()


def _search(pattern: str, text: str) -> bool | None:
    """Whether `pattern` matches somewhere in `text`; None when RE2 cannot take the pattern."""
    try:
        return compile_pattern(pattern).search(text) is not None
    except ValueError:
        return None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    found = _search(pattern, instance)
    if found is None:
        yield ValidationError(f"{pattern!r} is not a pattern this gateway can check (RE2 syntax)")
    elif not found:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, properties: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in properties.items():
        for key, value in instance.items():
            found = _search(pattern, key)
            if found is None:
                yield ValidationError(f"{pattern!r} is not a pattern this gateway can check")
            elif found:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


@functools.cache
def _confined(cls: type[Validator]) -> type[Validator]:
    keywords = {"pattern": _pattern, "patternProperties": _pattern_properties}
    return extend(cls, keywords)  # type: ignore[no-untyped-call,no-any-return]


def problem(schema: dict[str, Any], value: Any) -> str | None:
    """What is wrong with `value` against `schema` (None: valid); nothing is fetched."""
    validator = _confined(validator_for(schema))(schema, registry=_NO_REMOTE)
    try:
        error = best_match(validator.iter_errors(value))
    except Unresolvable as exc:
        return f"the schema has a reference that does not resolve within it ({exc})"
    except RecursionError:
        return "the schema's references recurse without end"
    if error is None:
        return None
    return f"at `{error.json_path}`: {error.message}"


def outside_reference(schema: Any) -> str | None:
    """The first `$ref` (or `$dynamicRef`) that points outside the schema, if any: such a schema is
    refused rather than resolved (walked with a stack, so depth cannot exhaust recursion)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                    if not value.startswith("#"):
                        return value
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return None
