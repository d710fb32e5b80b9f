"""Answers in the OpenAI wire shape: the chat.completion object and chat.completion.chunk pieces."""

from __future__ import annotations

import secrets
from typing import Any

from hanse.domain import ChoiceDelta, Completion, ToolCall, ToolCallDelta, Usage


def usage_body(usage: Usage) -> dict[str, Any]:
    """OpenAI's `usage`; the token details when the provider reported cached, reasoning or audio
    tokens."""
    body: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if (
        usage.cached_prompt_tokens
        or usage.reasoning_tokens
        or usage.audio_prompt_tokens
        or usage.audio_completion_tokens
    ):
        body["prompt_tokens_details"] = {
            "cached_tokens": usage.cached_prompt_tokens,
            "audio_tokens": usage.audio_prompt_tokens,
        }
        body["completion_tokens_details"] = {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": usage.audio_completion_tokens,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return body


def _reasoning_fields(text: str | None) -> dict[str, str]:
    """The provider's reasoning under both names clients read: `reasoning_content` (vLLM,
    DeepSeek) and `reasoning` (OpenRouter)."""
    return {"reasoning_content": text, "reasoning": text} if text else {}


def completion_body(
    completion: Completion, *, id: str, created: int, model: str, legacy_functions: bool = False
) -> dict[str, Any]:
    """The `chat.completion` object; `legacy_functions`: a call as the deprecated
    `message.function_call` (the request used `functions`)."""
    choices = []
    for choice in completion.choices:
        # OpenAI's shape: `content` is null beside tool calls when the model said nothing else.
        content = None if choice.tool_calls and not choice.content else choice.content
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content,
            "refusal": choice.refusal,
            **_reasoning_fields(choice.reasoning),
        }
        finish: str = choice.finish_reason
        if choice.audio is not None:
            message["audio"] = choice.audio
        if choice.tool_calls and legacy_functions:
            call = choice.tool_calls[0]
            message["function_call"] = {"name": call.name, "arguments": call.arguments}
            finish = _LEGACY_FINISH.get(finish, finish)
        elif choice.tool_calls:
            message["tool_calls"] = [_tool_call_body(call) for call in choice.tool_calls]
        choices.append(
            {
                "index": choice.index,
                "message": message,
                "finish_reason": finish,
                "logprobs": _logprobs(choice.logprobs),
            }
        )
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage_body(completion.usage),
    }
    if completion.system_fingerprint:
        body["system_fingerprint"] = completion.system_fingerprint
    if completion.service_tier:
        body["service_tier"] = completion.service_tier
    return body


def _tool_call_body(call: ToolCall) -> dict[str, Any]:
    """A call in OpenAI's shape: `function` with `arguments`, or `custom` with `input`."""
    if call.kind == "custom":
        return {
            "id": call.id,
            "type": "custom",
            "custom": {"name": call.name, "input": call.arguments},
        }
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.id, "type": "function", "function": function}


class ChunkWriter:
    """Builds the chunks of one stream: same id and created on each, a role delta first per choice."""

    def __init__(
        self,
        *,
        id: str,
        created: int,
        model: str,
        include_usage: bool,
        legacy_functions: bool = False,
    ) -> None:
        self._base: dict[str, Any] = {
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self._include_usage = include_usage
        self._legacy = legacy_functions
        self._started: set[int] = set()
        self._tool_calls_seen: set[tuple[int, int]] = set()
        self._custom_calls: set[tuple[int, int]] = set()  # the calls that are custom ones

    def chunks(self, delta: ChoiceDelta) -> list[dict[str, Any]]:
        """The chunk(s) a delta becomes: the choice's role chunk first, if it has not gone out yet."""
        out = []
        if delta.system_fingerprint and "system_fingerprint" not in self._base:
            self._base["system_fingerprint"] = delta.system_fingerprint
        if delta.service_tier and "service_tier" not in self._base:
            self._base["service_tier"] = delta.service_tier
        if delta.index not in self._started:
            self._started.add(delta.index)
            # `content: ""` opens a text answer, null one that starts with tool calls or
            # reasoning (a tool-only stream never carries `content: ""`), as OpenAI sends them.
            opening = "" if delta.content or not delta.carries_answer() else None
            role = {"role": "assistant", "content": opening, "refusal": None}
            out.append(
                self._chunk(
                    [{"index": delta.index, "delta": role, "logprobs": None, "finish_reason": None}]
                )
            )
        body: dict[str, Any] = _reasoning_fields(delta.reasoning)
        if delta.content:
            body["content"] = delta.content
        if delta.refusal:
            body["refusal"] = delta.refusal
        if delta.audio:
            body["audio"] = delta.audio
        if delta.tool_calls and self._legacy:
            body["function_call"] = self._function_call(delta.index, delta.tool_calls)
        elif delta.tool_calls:
            body["tool_calls"] = [self._tool_call(delta.index, piece) for piece in delta.tool_calls]
        finish: str | None = delta.finish_reason
        if finish and self._legacy:
            finish = _LEGACY_FINISH.get(finish, finish)
        if body or finish:
            choice = {
                "index": delta.index,
                "delta": body,
                "logprobs": _logprobs(delta.logprobs),
                "finish_reason": finish,
            }
            out.append(self._chunk([choice]))
        return out

    def final_chunk(self, usage: Usage | None) -> dict[str, Any]:
        """A last chunk with no choices: the usage, when `stream_options.include_usage` asked."""
        chunk = {**self._base, "choices": []}
        if usage is not None:
            chunk["usage"] = usage_body(usage)
        return chunk

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk = {**self._base, "choices": choices}
        if self._include_usage:
            chunk["usage"] = None
        return chunk

    def _function_call(self, choice: int, pieces: list[ToolCallDelta]) -> dict[str, str]:
        """The first call's pieces as the deprecated `function_call` delta (name first)."""
        call: dict[str, str] = {}
        for piece in pieces:
            if piece.index != 0:
                continue  # one function per answer in the deprecated form
            if (choice, 0) not in self._tool_calls_seen:
                self._tool_calls_seen.add((choice, 0))
                call["name"] = piece.name or ""
            call["arguments"] = call.get("arguments", "") + (piece.arguments or "")
        return call

    def _tool_call(self, choice: int, piece: ToolCallDelta) -> dict[str, Any]:
        """A call's piece: `function.arguments`, or a custom call's `custom.input`, the first
        piece with the id, type and name."""
        key = (choice, piece.index)
        call: dict[str, Any] = {"index": piece.index}
        fields: dict[str, str] = {}
        if key not in self._tool_calls_seen:
            self._tool_calls_seen.add(key)
            if piece.kind == "custom":
                self._custom_calls.add(key)
            # A provider that sends no id still gets its call named, as the schema requires.
            call["id"] = piece.id or "call_" + secrets.token_hex(12)
            call["type"] = "custom" if key in self._custom_calls else "function"
            fields["name"] = piece.name or ""
        if key in self._custom_calls:
            fields["input"] = piece.arguments or ""
            call["custom"] = fields
        else:
            fields["arguments"] = piece.arguments or ""
            call["function"] = fields
        return call


# The deprecated `functions` finish a call with `function_call`, where tools finish `tool_calls`.
_LEGACY_FINISH = {"tool_calls": "function_call"}


def _logprobs(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    return None if entries is None else {"content": entries, "refusal": None}
