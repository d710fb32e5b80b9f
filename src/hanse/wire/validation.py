"""Turns pydantic's validation errors into catalog errors that name the parameter at fault."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

from pydantic import ValidationError

from hanse.errors import (
    INVALID_JSON,
    INVALID_TYPE,
    INVALID_VALUE,
    MISSING_FIELD,
    MISSING_REQUIRED,
    NOT_SUPPORTED_YET,
    OUT_OF_RANGE,
    UNKNOWN_PARAMETER,
    ErrorCode,
    HanseError,
)

_RANGE = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "too_short",
    "too_long",
    "string_too_short",
    "string_too_long",
}
_VALUE = {"literal_error", "enum", "string_pattern_mismatch", "value_error", "union_tag_invalid"}
_MISSING = {"missing", "union_tag_not_found"}
# The error type a wire validator raises for a recognised shape not served yet (VALIDATION_4008).
NOT_SUPPORTED_YET_ERROR = "not_supported_yet"
# `model: ""` or `messages: []` is as good as missing: VALIDATION_4002, as the reference page says.
_ABSENT = {"missing", "too_short", "string_too_short"}


def param_path(loc: Sequence[int | str]) -> str:
    """`("messages", 0, "user", "content")` -> `messages[0].content`: union labels are dropped."""
    path = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _is_union_label(part, loc[max(index - 2, 0) : index]):
            path += f".{part}" if path else part
    return path


def _is_union_label(part: str, before: Sequence[int | str]) -> bool:
    # pydantic names the union member in the location: a discriminator tag right after the union
    # (a list item or `response_format`), or a type label such as `str` or `list[str]`.
    previous = before[-1] if before else None
    if part in _FIELD_TAGS:
        # Also a field name (`tool_calls[0].function`): a tag only right after an item of its list.
        return isinstance(previous, int) and before[0] in _FIELD_TAGS[part]
    if part in _TAGS and (isinstance(previous, int) or previous in _TAGGED_FIELDS):
        return True
    return (
        part in _TYPE_LABELS
        or "[" in part
        or part[:1].isupper()
        or part.startswith(("function-", "constrained-", "literal"))
    )


_TAGS = {
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "text",
    "image_url",
    "input_audio",
    "file",
    "refusal",
    "json_object",
    "json_schema",
    # Anthropic Messages blocks and sources (hanse.faces.messages.wire).
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "base64",
    "url",
    # Blueprint railguard types (hanse.blueprints.models).
    "deny_pattern",
    "pii",
    "max_input_tokens",
}
_TAGGED_FIELDS = {"response_format", "source"}
# Tags that are also field names, with the lists whose items they tag (a `function` message, a
# function or custom tool, a function or custom call).
_FIELD_TAGS = {
    "function": {"messages", "tools", "tool_calls"},
    "custom": {"tools", "tool_calls"},
}
_TYPE_LABELS = {"str", "int", "float", "bool", "dict", "list", "none"}


def raise_for_validation_error(
    exc: ValidationError, required: Sequence[str] = (), prefix: str = ""
) -> NoReturn:
    """Raise the catalog error for the first problem pydantic found; `prefix` (such as
    `blueprint_config.`) places a nested object's fields in the request."""
    errors = exc.errors(include_url=False, include_input=False)
    first = _most_specific(errors)
    kind = first["type"]
    loc = _location(first)
    path = param_path(loc)
    param = (prefix + path if path else prefix.rstrip(".")) or None
    if kind == "json_invalid" or (kind in {"model_type", "model_attributes_type"} and not loc):
        raise HanseError(INVALID_JSON, "The request body must be a JSON object.")
    if kind in _ABSENT and len(loc) == 1 and loc[0] in required:
        problem = "is required" if kind == "missing" else "must not be empty"
        raise HanseError(
            MISSING_REQUIRED, f"`{loc[0]}` {problem}.", param=param, details={"parameter": param}
        )
    code = _code_for(kind)
    if code is UNKNOWN_PARAMETER:
        message = f"Unrecognized request argument supplied: {param}"
    elif code is NOT_SUPPORTED_YET:
        message = f"{first['msg']}."
    elif kind in _MISSING:
        message = f"`{param}` is required."
    else:
        message = f"Invalid value for `{param}`: {first['msg']}."
    details: dict[str, Any] = {"parameter": param, "problem": kind}
    if "ctx" in first:
        details["constraint"] = {k: _plain(v) for k, v in first["ctx"].items() if k != "error"}
    raise HanseError(code, message, param=param, details=details)


def _most_specific(errors: list[Any]) -> Any:
    # A union reports one error per branch; the deepest location is the one the client meant, and
    # at equal depth a branch whose type matched (e.g. a list of 5 stops) beats a type mismatch.
    return max(
        enumerate(errors),
        key=lambda item: (
            len(param_path(_location(item[1]))),
            not item[1]["type"].endswith("_type"),
            -item[0],
        ),
    )[1]


def _location(error: Any) -> tuple[int | str, ...]:
    """The error's location; a bad or missing union tag points at the tag field (`role`, `type`)."""
    loc = tuple(error["loc"])
    if error["type"] in {"union_tag_invalid", "union_tag_not_found"}:
        discriminator = str(error.get("ctx", {}).get("discriminator", "")).strip("'")
        if discriminator.isidentifier():
            loc += (discriminator,)
    return loc


def _code_for(kind: str) -> ErrorCode:
    if kind == "extra_forbidden":
        return UNKNOWN_PARAMETER
    if kind == NOT_SUPPORTED_YET_ERROR:
        return NOT_SUPPORTED_YET
    if kind in _MISSING:
        return MISSING_FIELD
    if kind in _RANGE:
        return OUT_OF_RANGE
    if kind in _VALUE:
        return INVALID_VALUE
    return INVALID_TYPE


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
