"""The core's answer in Anthropic's shape: a Message, its stream events, and errors.

`billing_cost` and `environment_impact` ride the Message, and in a stream the `message_delta`
event (the one that carries the final usage). Stop reasons: `stop` is `end_turn` (providers do not
say which stop sequence matched), `length` `max_tokens`, `tool_calls` (or any answer with a call)
`tool_use`, a content filter or a railguard's block `refusal`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

from hanse.answer import Answer, AnswerEvent, Failed, Settled, close_events
from hanse.domain import Choice, ChoiceDelta, Usage
from hanse.errors import HanseError
from hanse.wire.sse import sse_named_event

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
    "blocked": "refusal",
}
# Anthropic's error types by HTTP status; the Melious code stays beside them.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def message_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def usage_body(usage: Usage) -> dict[str, Any]:
    """Anthropic's usage: cached prompt tokens are reported apart from `input_tokens`."""
    cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
    return {
        "input_tokens": usage.prompt_tokens - cached,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def message_body(answer: Answer, id: str) -> dict[str, Any]:
    """The Message for a whole answer (one choice: the Messages API has no `n`)."""
    completion = answer.completion
    assert completion is not None
    choice = completion.choices[0]
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": _blocks(choice),
        "stop_reason": _stop_reason(choice.finish_reason, bool(choice.tool_calls)),
        "stop_sequence": None,
        "usage": usage_body(completion.usage),
        **answer.metered,
    }


def _blocks(choice: Choice) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if choice.reasoning:
        blocks.append({"type": "thinking", "thinking": choice.reasoning, "signature": ""})
    text = choice.content if choice.content is not None else choice.refusal
    if text:
        blocks.append({"type": "text", "text": text})
    for call in choice.tool_calls:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call.arguments)}
        )
    if not blocks:
        blocks.append({"type": "text", "text": ""})
    return blocks


def _input(arguments: str) -> dict[str, Any]:
    """A call's arguments as `input`: an object; arguments cut short (`max_tokens`) are `{}`."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _stop_reason(finish: str | None, called: bool) -> str:
    if called and finish in ("stop", "tool_calls", "function_call"):
        return "tool_use"
    return _STOP_REASONS.get(finish or "stop", "end_turn")


def error_body(error: HanseError, request_id: str) -> dict[str, Any]:
    """Anthropic's error shape, the Melious catalog entry kept (`code`, `param`, `details`)."""
    status = error.error.status
    kind = _ERROR_TYPES.get(status, "api_error")
    body = error.body()["error"]
    return {
        "type": "error",
        "error": {
            "type": kind,
            "message": body["message"],
            **{k: body[k] for k in ("code", "param", "details")},
        },
        "request_id": request_id,
    }


class MessageStream:
    """Renders neutral events as Anthropic's SSE events, one content block at a time."""

    def __init__(self, answer: Answer, id: str, request_id: str) -> None:
        self.answer = answer
        self.id = id
        self.request_id = request_id
        self.block: str | None = None  # the open block's kind: text, thinking or tool_use
        self.index = -1
        self.finish: str | None = None
        self.called = False

    async def events(self) -> AsyncIterator[bytes]:
        assert self.answer.events is not None
        events = self.answer.events
        yield self._start()
        yield sse_named_event("ping", {"type": "ping"})
        try:
            async for event in events:
                for frame in self._render(event):
                    yield frame
        finally:
            await close_events(events)

    def _start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.answer.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.answer.input_tokens,
                "output_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        return sse_named_event("message_start", {"type": "message_start", "message": message})

    def _render(self, event: AnswerEvent) -> list[bytes]:
        if isinstance(event, Settled):
            frames = self._close()
            delta = {"stop_reason": _stop_reason(self.finish, self.called), "stop_sequence": None}
            body = {"type": "message_delta", "delta": delta, "usage": usage_body(event.usage)}
            frames.append(sse_named_event("message_delta", body | event.metered))
            frames.append(sse_named_event("message_stop", {"type": "message_stop"}))
            return frames
        if isinstance(event, Failed):
            body = error_body(event.error, self.request_id)
            return [*self._close(), sse_named_event("error", body)]
        return self._delta(event)

    def _delta(self, delta: ChoiceDelta) -> list[bytes]:
        frames: list[bytes] = []
        if delta.reasoning:
            frames += self._piece(
                "thinking", {"type": "thinking_delta", "thinking": delta.reasoning}
            )
        text = delta.content or delta.refusal
        if text:
            frames += self._piece("text", {"type": "text_delta", "text": text})
        for call in delta.tool_calls or []:
            if call.name is not None or call.id is not None:  # a call's first piece: a new block
                self.called = True
                frames += self._close()
                block = {
                    "type": "tool_use",
                    "id": call.id or "toolu_" + secrets.token_hex(12),
                    "name": call.name or "",
                    "input": {},
                }
                frames.append(self._open("tool_use", block))
            if call.arguments:
                piece = {"type": "input_json_delta", "partial_json": call.arguments}
                frames.append(self._delta_frame(piece))
        if delta.finish_reason is not None:
            self.finish = delta.finish_reason
        return frames

    def _piece(self, kind: str, piece: dict[str, Any]) -> list[bytes]:
        frames: list[bytes] = []
        if self.block != kind:
            frames += self._close()
            empty = (
                {"type": "text", "text": ""}
                if kind == "text"
                else {
                    "type": "thinking",
                    "thinking": "",
                    "signature": "",
                }
            )
            frames.append(self._open(kind, empty))
        frames.append(self._delta_frame(piece))
        return frames

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        self.block = kind
        self.index += 1
        body = {"type": "content_block_start", "index": self.index, "content_block": block}
        return sse_named_event("content_block_start", body)

    def _delta_frame(self, piece: dict[str, Any]) -> bytes:
        body = {"type": "content_block_delta", "index": self.index, "delta": piece}
        return sse_named_event("content_block_delta", body)

    def _close(self) -> list[bytes]:
        if self.block is None:
            return []
        self.block = None
        body = {"type": "content_block_stop", "index": self.index}
        return [sse_named_event("content_block_stop", body)]
