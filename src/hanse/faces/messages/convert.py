"""An Anthropic Messages request as the Melious chat request, the core's one input.

Blueprints, limits, railguards, capabilities, routing and metering then apply exactly as for chat
completions. The mapping (docs/messages.md):

    system (string or text blocks)     a system message
    text / image / document blocks     text, image_url and file parts (documents as text when plain)
    tool_use (assistant)               tool_calls, `input` as JSON `arguments`
    tool_result (user)                 a tool message per result, before the rest of the turn
    thinking / redacted_thinking       read, not forwarded (no provider takes reasoning back)
    tools / tool_choice                function tools; auto, any -> required, tool -> named, none
    thinking, output_config.effort     reasoning_effort
    output_config.format               response_format json_schema
    stop_sequences, metadata.user_id   stop, user
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from hanse.errors import NOT_SUPPORTED_YET, HanseError
from hanse.faces.messages.wire import (
    Base64Source,
    Block,
    ContentSource,
    CountTokensRequest,
    DocumentBlock,
    ImageBlock,
    MessagesRequest,
    PlainTextSource,
    TextBlock,
    Thinking,
    ToolResultBlock,
    ToolUseBlock,
    UrlSource,
)
from hanse.wire.request import ChatCompletionRequest
from hanse.wire.validation import raise_for_validation_error

# `thinking.budget_tokens` up to these bounds is `low`, then `medium`; anything above is `high`.
_LOW_BUDGET, _MEDIUM_BUDGET = 4096, 16384
_USER_CHARS = 256  # the chat request's bound on `user`; a longer `metadata.user_id` is not sent


def to_chat_request(
    request: MessagesRequest | CountTokensRequest, model: str
) -> ChatCompletionRequest:
    """The chat request for `request`, its model already mapped to the catalog's `model`."""
    body: dict[str, Any] = {"model": model, "messages": chat_messages(request)}
    if request.tools:
        body["tools"] = _tools(request)
    if request.tool_choice is not None:
        choice = request.tool_choice
        body["tool_choice"] = _tool_choice(choice.type, choice.name)
        if choice.disable_parallel_tool_use:
            body["parallel_tool_calls"] = False
    effort = _effort(request)
    if effort is not None:
        body["reasoning_effort"] = effort
    fmt = request.output_config.format if request.output_config else None
    fmt = fmt or request.output_format
    if fmt is not None:
        schema = {"name": "output", "schema": fmt.schema_, "strict": True}
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    if isinstance(request, MessagesRequest):
        body.update(_sampling(request))
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise_for_validation_error(exc)


def _sampling(request: MessagesRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {"max_tokens": request.max_tokens}
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(request, name)
        if value is not None:
            fields[name] = value
    if request.stop_sequences:
        fields["stop"] = request.stop_sequences
    user = request.metadata.user_id if request.metadata else None
    if user and len(user) <= _USER_CHARS:
        fields["user"] = user
    if request.stream:
        fields["stream"] = True
        fields["stream_options"] = {"include_usage": True}  # message_delta carries the usage
    return fields


def chat_messages(request: MessagesRequest | CountTokensRequest) -> list[dict[str, Any]]:
    """The conversation in chat's shape, the system prompt first."""
    messages: list[dict[str, Any]] = []
    system = request.system
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list) and system:
        messages.append({"role": "system", "content": [_text(b.text) for b in system]})
    for index, message in enumerate(request.messages):
        if isinstance(message.content, str):
            messages.append({"role": message.role, "content": message.content})
        elif message.role == "assistant":
            messages.append(_assistant(message.content))
        else:
            messages += _user(message.content, f"messages[{index}].content")
    return messages


def _assistant(blocks: Sequence[Block]) -> dict[str, Any]:
    text = "".join(b.text for b in blocks if isinstance(b, TextBlock))
    calls = [
        {
            "id": b.id,
            "type": "function",
            "function": {"name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)},
        }
        for b in blocks
        if isinstance(b, ToolUseBlock)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return message


def _user(blocks: Sequence[Block], param: str) -> list[dict[str, Any]]:
    """Tool results first (each its own tool message, answering the turn before), then the rest
    of the turn as one user message; a result's images and documents join that message."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(blocks):
        where = f"{param}[{index}]"
        if isinstance(block, ToolResultBlock):
            text, attached = _result(block, where)
            results.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
            parts += attached
        elif isinstance(block, TextBlock | ImageBlock | DocumentBlock):
            parts += _part(block, where)
        # thinking blocks and tool_use in a user turn carry nothing a provider can take
    if parts or not results:
        results.append({"role": "user", "content": parts or ""})
    return results


def _result(block: ToolResultBlock, where: str) -> tuple[str, list[dict[str, Any]]]:
    content = block.content
    if content is None or isinstance(content, str):
        text, attached = content or "", []
    else:
        text = "".join(p.text for p in content if isinstance(p, TextBlock))
        attached = [
            part
            for i, p in enumerate(content)
            if not isinstance(p, TextBlock)
            for part in _part(p, f"{where}.content[{i}]")
        ]
    # Chat has no error flag on a tool result: the model is told in the text.
    return (f"Error: {text}" if block.is_error else text), attached


def _part(block: TextBlock | ImageBlock | DocumentBlock, where: str) -> list[dict[str, Any]]:
    if isinstance(block, TextBlock):
        return [_text(block.text)]
    if isinstance(block, ImageBlock):
        image = block.source
        url = image.url if isinstance(image, UrlSource) else _data_url(image)
        return [{"type": "image_url", "image_url": {"url": url}}]
    source = block.source
    title = f"{block.title}\n\n" if block.title else ""
    if isinstance(source, PlainTextSource):
        return [_text(title + source.data)]
    if isinstance(source, ContentSource):
        texts = (
            [source.content]
            if isinstance(source.content, str)
            else [b.text for b in source.content]
        )
        return [_text(title + "\n".join(texts))]
    if isinstance(source, UrlSource):
        raise HanseError(
            NOT_SUPPORTED_YET,
            "A document given by URL is not supported yet by this gateway: send it as base64.",
            param=f"{where}.source",
            details={"parameter": f"{where}.source"},
        )
    file = {"filename": block.title or "document.pdf", "file_data": _data_url(source)}
    return [{"type": "file", "file": file}]


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _data_url(source: Base64Source) -> str:
    return f"data:{source.media_type};base64,{source.data}"


def _tools(request: MessagesRequest | CountTokensRequest) -> list[dict[str, Any]]:
    tools = []
    for index, tool in enumerate(request.tools or []):
        if tool.type not in (None, "custom"):
            raise HanseError(
                NOT_SUPPORTED_YET,
                f"The server tool `{tool.type}` is not supported yet by this gateway.",
                param=f"tools[{index}].type",
                details={"parameter": f"tools[{index}].type"},
            )
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description is not None:
            function["description"] = tool.description
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(kind: str, name: str | None) -> str | dict[str, Any]:
    if kind == "tool":
        return {"type": "function", "function": {"name": name or ""}}
    return {"auto": "auto", "any": "required", "none": "none"}[kind]


def _effort(request: MessagesRequest | CountTokensRequest) -> str | None:
    """`output_config.effort` as it is; else an enabled `thinking` by its budget."""
    if request.output_config is not None and request.output_config.effort is not None:
        return request.output_config.effort
    thinking: Thinking | None = request.thinking
    if thinking is None or thinking.type == "disabled":
        return None
    budget = thinking.budget_tokens
    if thinking.type == "adaptive" or budget is None:
        return "medium"
    if budget <= _LOW_BUDGET:
        return "low"
    return "medium" if budget <= _MEDIUM_BUDGET else "high"
