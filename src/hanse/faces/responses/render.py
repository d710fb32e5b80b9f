"""The core's answer as an OpenAI Response object, and as the Responses API's typed stream events.

Output items, in order: `reasoning` (the provider's reasoning text), `message` (`output_text`, or
a `refusal`), then one `function_call` per call. `status` is `completed`, or `incomplete` with
`incomplete_details.reason` (`max_output_tokens`, `content_filter`). `billing_cost` and
`environment_impact` ride the Response, and in a stream the one in `response.completed`. Every event
carries its `sequence_number`, from 0.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from hanse.answer import Answer, Failed, Settled, close_events
from hanse.domain import Choice, ChoiceDelta, Usage
from hanse.errors import HanseError
from hanse.faces.responses.wire import (
    AllowedTools,
    InputItem,
    MessageItem,
    NamedFunction,
    ResponsesRequest,
    ToolChoice,
)
from hanse.wire.sse import sse_named_event

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_id() -> str:
    return "resp_" + secrets.token_hex(24)


def _item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


@dataclass(slots=True)
class Frame:
    """What a Response says besides its output: the request's settings, echoed as OpenAI does."""

    id: str
    model: str
    request: ResponsesRequest
    tools: list[dict[str, Any]]
    created_at: int = field(default_factory=lambda: int(time.time()))

    def body(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        request = self.request
        fmt = request.text.format if request.text and request.text.format else None
        text_format = fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}
        choice = request.tool_choice
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id,
            "reasoning": {
                "effort": request.reasoning.effort if request.reasoning else None,
                "summary": None,
            },
            "store": request.store is not False,
            "temperature": request.temperature if request.temperature is not None else 1.0,
            "text": {"format": text_format},
            "tool_choice": _choice_body(choice),
            "tools": self.tools,
            "top_p": request.top_p if request.top_p is not None else 1.0,
            "truncation": request.truncation or "disabled",
            "usage": None,
            "user": request.user,
            "metadata": request.metadata or {},
        }


def _choice_body(choice: ToolChoice | None) -> Any:
    if isinstance(choice, NamedFunction | AllowedTools):
        return choice.model_dump()
    return choice or "auto"


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_prompt_tokens,
            "cache_write_tokens": 0,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def output_items(choice: Choice) -> list[dict[str, Any]]:
    """A whole choice's output items."""
    items: list[dict[str, Any]] = []
    if choice.reasoning:
        items.append(_reasoning_item(_item_id("rs"), choice.reasoning))
    text = choice.content if choice.content is not None else None
    if text or choice.refusal or not choice.tool_calls:
        part = (
            _refusal_part(choice.refusal) if choice.refusal and not text else _text_part(text or "")
        )
        items.append(_message_item(_item_id("msg"), [part], "completed"))
    for call in choice.tool_calls:
        items.append(_call_item(_item_id("fc"), call.id, call.name, call.arguments, "completed"))
    return items


def response_body(answer: Answer, frame: Frame) -> dict[str, Any]:
    """The Response for a whole answer (one choice: the Responses API has no `n`)."""
    assert answer.completion is not None
    choice = answer.completion.choices[0]
    body = frame.body(_status(choice.finish_reason), output_items(choice))
    body["incomplete_details"] = _incomplete(choice.finish_reason)
    body["usage"] = usage_body(answer.completion.usage)
    return body | answer.metered


def _status(finish: str | None) -> str:
    return "incomplete" if finish in _INCOMPLETE else "completed"


def _incomplete(finish: str | None) -> dict[str, str] | None:
    reason = _INCOMPLETE.get(finish or "")
    return {"reason": reason} if reason else None


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _refusal_part(refusal: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": refusal}


def _message_item(id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"type": "message", "id": id, "status": status, "role": "assistant", "content": content}


def _reasoning_item(id: str, text: str) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if text else []
    return {"type": "reasoning", "id": id, "summary": [], "content": content}


def _call_item(id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def input_item_body(item: InputItem) -> dict[str, Any]:
    """An input item as `input_items` lists it: typed, a message's text as a content part."""
    body = item.model_dump(by_alias=True, exclude_none=True)
    if isinstance(item, MessageItem):
        body["type"] = "message"
        if isinstance(item.content, str):
            kind = "output_text" if item.role == "assistant" else "input_text"
            body["content"] = [{"type": kind, "text": item.content}]
    return body


def conversation_turn(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A Response's output as chat messages, for the next response that continues it."""
    text = "".join(
        part.get("text", "") or part.get("refusal", "")
        for item in body["output"]
        if item["type"] == "message"
        for part in item["content"]
    )
    calls = [
        {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        for item in body["output"]
        if item["type"] == "function_call"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return [message]


class ResponseStream:
    """Renders neutral events as the Responses API's stream; `on_done` receives the final
    Response (completed or incomplete) before `response.completed` goes out."""

    def __init__(
        self,
        answer: Answer,
        frame: Frame,
        on_done: Callable[[dict[str, Any]], Any],
    ) -> None:
        self.answer = answer
        self.frame = frame
        self.on_done = on_done
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the item being streamed
        self.finish: str | None = None

    async def events(self) -> AsyncIterator[bytes]:
        assert self.answer.events is not None
        events = self.answer.events
        shell = self.frame.body("in_progress", [])
        yield self._event("response.created", {"response": shell})
        yield self._event("response.in_progress", {"response": shell})
        try:
            async for event in events:
                if isinstance(event, Settled):
                    for frame in self._close():
                        yield frame
                    body = self.frame.body(_status(self.finish), self.output)
                    body["incomplete_details"] = _incomplete(self.finish)
                    body["usage"] = usage_body(event.usage)
                    body |= event.metered
                    await self.on_done(body)
                    name = (
                        "response.completed"
                        if body["status"] == "completed"
                        else "response.incomplete"
                    )
                    yield self._event(name, {"response": body})
                elif isinstance(event, Failed):
                    for frame in [*self._close(), *self._failed(event.error)]:
                        yield frame
                else:
                    for frame in self._delta(event):
                        yield frame
        finally:
            await close_events(events)

    def _event(self, name: str, fields: dict[str, Any]) -> bytes:
        body = {"type": name, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse_named_event(name, body)

    def _failed(self, error: HanseError) -> list[bytes]:
        """An `error` event, then `response.failed` with the items sent so far."""
        body = self.frame.body("failed", self.output)
        wire = error.body()["error"]
        body["error"] = {"code": wire["code"], "message": wire["message"]}
        fields = {"code": wire["code"], "message": wire["message"], "param": wire["param"]}
        return [self._event("error", fields), self._event("response.failed", {"response": body})]

    def _delta(self, delta: ChoiceDelta) -> list[bytes]:
        frames: list[bytes] = []
        if delta.reasoning:
            frames += self._reasoning(delta.reasoning)
        text = delta.content or delta.refusal
        if text:
            frames += self._text(text, refusal=bool(delta.refusal and not delta.content))
        for call in delta.tool_calls or []:
            if call.name is not None or call.id is not None:
                frames += self._close()
                call_id = call.id or "call_" + secrets.token_hex(12)
                item = _call_item(_item_id("fc"), call_id, call.name or "", "", "in_progress")
                frames.append(self._open(item))
            if call.arguments and self.open is not None and self.open["type"] == "function_call":
                self.open["arguments"] += call.arguments
                frames.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        {
                            "item_id": self.open["id"],
                            "output_index": len(self.output),
                            "delta": call.arguments,
                        },
                    )
                )
        if delta.finish_reason is not None:
            self.finish = delta.finish_reason
        return frames

    def _reasoning(self, text: str) -> list[bytes]:
        frames: list[bytes] = []
        if self.open is None or self.open["type"] != "reasoning":
            frames += self._close()
            frames.append(self._open(_reasoning_item(_item_id("rs"), "")))
            self.open["content"] = [{"type": "reasoning_text", "text": ""}]  # type: ignore[index]
        assert self.open is not None
        self.open["content"][0]["text"] += text
        fields = {
            "item_id": self.open["id"],
            "output_index": len(self.output),
            "content_index": 0,
            "delta": text,
        }
        frames.append(self._event("response.reasoning_text.delta", fields))
        return frames

    def _text(self, text: str, *, refusal: bool) -> list[bytes]:
        frames: list[bytes] = []
        if self.open is None or self.open["type"] != "message":
            frames += self._close()
            part = _refusal_part("") if refusal else _text_part("")
            frames.append(self._open(_message_item(_item_id("msg"), [], "in_progress")))
            assert self.open is not None
            self.open["content"].append(part)
            fields = {
                "item_id": self.open["id"],
                "output_index": len(self.output),
                "content_index": 0,
            }
            frames.append(self._event("response.content_part.added", fields | {"part": dict(part)}))
        assert self.open is not None
        part = self.open["content"][0]
        where = {"item_id": self.open["id"], "output_index": len(self.output), "content_index": 0}
        if part["type"] == "refusal":
            part["refusal"] += text
            frames.append(self._event("response.refusal.delta", where | {"delta": text}))
        else:
            part["text"] += text
            frames.append(
                self._event("response.output_text.delta", where | {"delta": text, "logprobs": []})
            )
        return frames

    def _open(self, item: dict[str, Any]) -> bytes:
        self.open = item
        return self._event(
            "response.output_item.added", {"output_index": len(self.output), "item": dict(item)}
        )

    def _close(self) -> list[bytes]:
        item = self.open
        if item is None:
            return []
        frames: list[bytes] = []
        index = len(self.output)
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            part = item["content"][0]
            if part["type"] == "output_text":
                done = where | {"content_index": 0, "text": part["text"], "logprobs": []}
                frames.append(self._event("response.output_text.done", done))
            else:
                done = where | {"content_index": 0, "refusal": part["refusal"]}
                frames.append(self._event("response.refusal.done", done))
            frames.append(
                self._event(
                    "response.content_part.done", where | {"content_index": 0, "part": part}
                )
            )
        elif item["type"] == "function_call":
            done = where | {"name": item["name"], "arguments": item["arguments"]}
            frames.append(self._event("response.function_call_arguments.done", done))
        elif item["type"] == "reasoning":
            text = item["content"][0]["text"] if item["content"] else ""
            done = where | {"content_index": 0, "text": text}
            frames.append(self._event("response.reasoning_text.done", done))
        item["status"] = "completed"
        self.output.append(item)
        self.open = None
        frames.append(
            self._event("response.output_item.done", {"output_index": index, "item": item})
        )
        return frames
