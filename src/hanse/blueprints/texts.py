"""Every text of a client's message that reaches a provider, in one fixed order.

    content        a string, or each text part's `text`, each refusal part's `refusal`, and
                   each file part's `filename`
    name           the participant's name (system, developer, user, assistant), a
                   `function` message's                                             identifier
    refusal        an assistant message's `refusal`
    tool_calls     each call's `id` (identifier), `function.name` (identifier), `function.arguments`;
                   a custom call's `id` (identifier), `custom.name` (identifier), `custom.input`
    function_call  the deprecated single call: `name` (identifier), `arguments`
    tool_call_id   a tool message's                                                 identifier

An identifier has a shape the conversation depends on (a tool call's id pairs it with its result,
a function name must match `^[a-zA-Z0-9_-]{1,64}$`), so it cannot take a placeholder. Not text:
images (the provider gets pixels the gateway re-encoded, never the client's URL), the base64 data of
audio and file parts (and a file's upstream `file_id`), and a tool message's `name` (never
forwarded).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from hanse.wire.request import (
    AssistantMessage,
    CustomToolCall,
    FilePart,
    FunctionCall,
    Message,
    RefusalPart,
    TextPart,
    ToolCall,
    ToolMessage,
)

# (text, is it an identifier) -> the text to put in its place
Rewrite = Callable[[str, bool], str]
_Part = TypeVar("_Part", bound=BaseModel)


def texts(message: Message) -> list[tuple[str, bool]]:
    """The message's texts, each with whether it is an identifier."""
    found: list[tuple[str, bool]] = []

    def record(text: str, identifier: bool) -> str:
        found.append((text, identifier))
        return text

    rewrite(message, record)
    return found


def rewrite(message: Message, replace: Rewrite) -> Message:
    """`message` with each of its texts replaced by what `replace` makes of it, in `texts`' order."""
    update: dict[str, Any] = {}
    content = message.content
    if isinstance(content, str):
        update["content"] = replace(content, False)
    elif content is not None:
        update["content"] = [_part(part, replace) for part in content]
    if not isinstance(message, ToolMessage) and message.name is not None:
        update["name"] = replace(message.name, True)
    if isinstance(message, AssistantMessage):
        if message.refusal is not None:
            update["refusal"] = replace(message.refusal, False)
        if message.tool_calls is not None:
            update["tool_calls"] = [_call(call, replace) for call in message.tool_calls]
        if message.function_call is not None:
            update["function_call"] = _function(message.function_call, replace)
    if isinstance(message, ToolMessage):
        update["tool_call_id"] = replace(message.tool_call_id, True)
    return message.model_copy(update=update)


def _part(part: _Part, replace: Rewrite) -> _Part:
    if isinstance(part, TextPart):
        return part.model_copy(update={"text": replace(part.text, False)})
    if isinstance(part, RefusalPart):
        return part.model_copy(update={"refusal": replace(part.refusal, False)})
    if isinstance(part, FilePart) and part.file.filename is not None:
        file = part.file.model_copy(update={"filename": replace(part.file.filename, False)})
        return part.model_copy(update={"file": file})
    return part


def _call(call: ToolCall | CustomToolCall, replace: Rewrite) -> ToolCall | CustomToolCall:
    call_id = replace(call.id, True)
    if isinstance(call, CustomToolCall):
        name = replace(call.custom.name, True)
        custom = call.custom.model_copy(
            update={"name": name, "input": replace(call.custom.input, False)}
        )
        return call.model_copy(update={"id": call_id, "custom": custom})
    return call.model_copy(update={"id": call_id, "function": _function(call.function, replace)})


def _function(function: FunctionCall, replace: Rewrite) -> FunctionCall:
    name = replace(function.name, True)
    return function.model_copy(
        update={"name": name, "arguments": replace(function.arguments, False)}
    )
