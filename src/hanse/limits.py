"""The `[limits]` checks on a parsed request, before anything costly reads it (VALIDATION_4101).

The body's size is capped at the HTTP edge (http/body.py); these bound what a well-formed body asks
for: how many messages, tools, stop strings and images, how much text, how large and deep a schema,
how many output tokens in all.
"""

from __future__ import annotations

import json
from typing import Any

from hanse.config.limits import LimitsConfig
from hanse.errors import LIMIT_EXCEEDED, HanseError
from hanse.wire.request import (
    AssistantMessage,
    ChatCompletionRequest,
    CustomGrammarFormat,
    CustomTool,
    CustomToolCall,
    ImagePart,
    JsonSchemaResponseFormat,
    RefusalPart,
    TextPart,
    Tool,
)


def check_limits(wire: ChatCompletionRequest, limits: LimitsConfig) -> None:
    """Raise VALIDATION_4101 for the first limit the request goes beyond."""
    _at_most("messages", "max_messages", len(wire.messages), limits.max_messages)
    _at_most("messages", "max_content_chars", content_chars(wire), limits.max_content_chars)
    _at_most("messages", "max_images", image_count(wire), limits.max_images)
    _at_most("tools", "max_tools", len(wire.tools or []), limits.max_tools)
    stops = [wire.stop] if isinstance(wire.stop, str) else wire.stop or []
    _at_most("stop", "max_stop_sequences", len(stops), limits.max_stop_sequences)
    for index, stop in enumerate(stops):
        param = "stop" if isinstance(wire.stop, str) else f"stop[{index}]"
        _at_most(param, "max_stop_chars", len(stop), limits.max_stop_chars)
    max_tokens = wire.max_completion_tokens or wire.max_tokens
    if max_tokens is not None:
        param = "max_tokens" if wire.max_tokens else "max_completion_tokens"
        total = max_tokens * (wire.n or 1)
        _at_most(param, "max_total_output_tokens", total, limits.max_total_output_tokens)
    for param, schema in _schemas(wire):
        _at_most(param, "max_schema_depth", json_depth(schema), limits.max_schema_depth)
        _at_most(param, "max_schema_bytes", json_size(schema), limits.max_schema_bytes)


def content_chars(wire: ChatCompletionRequest) -> int:
    """Characters of text in the conversation: contents, refusals, tool-call names and arguments."""
    total = 0
    for message in wire.messages:
        content = message.content
        if isinstance(content, str):
            total += len(content)
        elif content is not None:
            for part in content:
                if isinstance(part, TextPart):
                    total += len(part.text)
                elif isinstance(part, RefusalPart):
                    total += len(part.refusal)
        if isinstance(message, AssistantMessage):
            total += len(message.refusal or "")
            for call in message.tool_calls or []:
                if isinstance(call, CustomToolCall):
                    total += len(call.custom.name) + len(call.custom.input)
                else:
                    total += len(call.function.name) + len(call.function.arguments)
    return total


def image_count(wire: ChatCompletionRequest) -> int:
    return sum(
        isinstance(part, ImagePart)
        for message in wire.messages
        if isinstance(message.content, list)
        for part in message.content
    )


def json_depth(value: Any) -> int:
    """How deeply objects and arrays nest in `value` (a scalar is 0, `{}` is 1); no recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON, non-ASCII escaped (stdlib: integers of any size)."""
    return len(json.dumps(value, separators=(",", ":")))


def _schemas(wire: ChatCompletionRequest) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    fmt = wire.response_format
    if isinstance(fmt, JsonSchemaResponseFormat) and fmt.json_schema.schema_ is not None:
        found.append(("response_format.json_schema.schema", fmt.json_schema.schema_))
    for index, tool in enumerate(wire.tools or []):
        if isinstance(tool, Tool) and tool.function.parameters is not None:
            found.append((f"tools[{index}].function.parameters", tool.function.parameters))
        elif isinstance(tool, CustomTool) and isinstance(tool.custom.format, CustomGrammarFormat):
            # A custom tool's grammar is forwarded, never run here; bounded as a schema is.
            grammar = tool.custom.format.grammar.definition
            found.append((f"tools[{index}].custom.format.grammar.definition", grammar))
    return found


def _at_most(param: str, limit: str, actual: int, maximum: int) -> None:
    if actual > maximum:
        raise HanseError(
            LIMIT_EXCEEDED,
            f"`{param}` is over the limit `{limit}` ({actual} > {maximum}).",
            param=param,
            details={"parameter": param, "limit": limit, "maximum": maximum, "actual": actual},
        )
