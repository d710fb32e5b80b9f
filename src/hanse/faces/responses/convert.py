"""A Responses request as the Melious chat request, the core's one input.

instructions                      a system message first (not carried to the next response)
message items                     chat messages; input_text / input_image / input_file parts
                                  as text / image_url / file; output_text joined as content
function_call items               tool calls of one assistant message (joined to the message
                                  item before them)
function_call_output              a tool message answering `call_id`
reasoning items                   read, not forwarded
previous_response_id              the stored conversation first (hanse.storage.responses)
tools, tool_choice                function tools in chat's nested shape
text.format                       response_format
max_output_tokens, reasoning      max_completion_tokens, reasoning_effort
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from hanse.errors import NOT_SUPPORTED_YET, HanseError
from hanse.faces.responses.wire import (
    AllowedTools,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputFile,
    InputImage,
    InputItem,
    InputText,
    JsonObjectFormat,
    JsonSchemaFormat,
    MessageItem,
    NamedFunction,
    OutputText,
    Refusal,
    ResponsesRequest,
)
from hanse.wire.request import ChatCompletionRequest
from hanse.wire.validation import raise_for_validation_error

# Parameters passed to the chat request as they are.
_SAME = (
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "service_tier",
    "top_logprobs",
)


def to_chat_request(
    request: ResponsesRequest,
    conversation: list[dict[str, Any]],
    tools: list[FunctionTool],
    model: str,
) -> ChatCompletionRequest:
    """The chat request: `conversation` (the earlier turns and this input, in chat form) after
    the request's instructions."""
    messages = list(conversation)
    if request.instructions:
        messages.insert(0, {"role": "system", "content": request.instructions})
    body: dict[str, Any] = {"model": model, "messages": messages}
    for name in _SAME:
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.top_logprobs is not None:
        body["logprobs"] = True
    if request.max_output_tokens is not None:
        body["max_completion_tokens"] = request.max_output_tokens
    if request.reasoning is not None and request.reasoning.effort is not None:
        body["reasoning_effort"] = request.reasoning.effort
    if tools:
        body["tools"] = [_tool(tool) for tool in tools]
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    fmt = request.text.format if request.text else None
    if isinstance(fmt, JsonSchemaFormat):
        schema: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
        if fmt.strict is not None:
            schema["strict"] = fmt.strict
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(fmt, JsonObjectFormat):
        body["response_format"] = {"type": "json_object"}
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # response.completed carries the usage
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise_for_validation_error(exc)


def chat_messages(items: list[InputItem]) -> list[dict[str, Any]]:
    """The input items as chat messages."""
    messages: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, MessageItem):
            messages.append(_message(item))
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if not last["content"]:
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            messages.append(_tool_output(item))
        # reasoning items carry nothing a provider takes back
    return messages


def _message(item: MessageItem) -> dict[str, Any]:
    if isinstance(item.content, str):
        return {"role": item.role, "content": item.content}
    if item.role == "assistant":
        text = "".join(p.text for p in item.content if isinstance(p, OutputText | InputText))
        refusals = [p.refusal for p in item.content if isinstance(p, Refusal)]
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if refusals and not text:
            message["content"] = refusals[0]
        return message
    parts = [_part(p) for p in item.content if not isinstance(p, Refusal)]
    if item.role in ("system", "developer"):
        texts = [p for p in parts if p["type"] == "text"]
        return {"role": item.role, "content": texts or ""}
    return {"role": item.role, "content": parts}


def _part(part: Any) -> dict[str, Any]:
    if isinstance(part, InputText | OutputText):
        return {"type": "text", "text": part.text}
    if isinstance(part, InputImage):
        if part.image_url is None:
            raise HanseError(
                NOT_SUPPORTED_YET,
                "An `input_image` by `file_id` is not supported yet by this gateway: send "
                "`image_url` (a URL or a data URL).",
                param="input",
                details={"parameter": "input"},
            )
        image: dict[str, Any] = {"url": part.image_url}
        if part.detail is not None:
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    assert isinstance(part, InputFile)
    file = {
        key: value
        for key, value in (
            ("file_data", part.file_data),
            ("file_id", part.file_id),
            ("filename", part.filename),
        )
        if value is not None
    }
    return {"type": "file", "file": file}


def _tool_output(item: FunctionCallOutputItem) -> dict[str, Any]:
    output = item.output
    if isinstance(output, str):
        text = output
    else:
        text = "".join(p.text for p in output if isinstance(p, InputText))
    return {"role": "tool", "tool_call_id": item.call_id, "content": text}


def _tool(tool: FunctionTool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    for name in ("description", "parameters", "strict"):
        value = getattr(tool, name)
        if value is not None:
            function[name] = value
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, NamedFunction):
        return {"type": "function", "function": {"name": choice.name}}
    if isinstance(choice, AllowedTools):
        # The Responses API's flat tool references are what chat's `allowed_tools` takes too.
        return {
            "type": "allowed_tools",
            "allowed_tools": {"mode": choice.mode, "tools": choice.tools},
        }
    return choice
