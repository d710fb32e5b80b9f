"""Answers in the OpenAI wire shape: the chat.completion object and chat.completion.chunk pieces."""

from __future__ import annotations

from typing import Any

from hanse.domain import ChoiceDelta, Completion, Usage


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_body(completion: Completion, *, id: str, created: int, model: str) -> dict[str, Any]:
    """The `chat.completion` object."""
    choices = []
    for choice in completion.choices:
        message: dict[str, Any] = {"role": "assistant", "content": choice.content, "refusal": None}
        if choice.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in choice.tool_calls
            ]
        choices.append(
            {
                "index": choice.index,
                "message": message,
                "finish_reason": choice.finish_reason,
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
    return body


class ChunkWriter:
    """Builds the chunks of one stream: same id and created on each, a role delta first per choice."""

    def __init__(self, *, id: str, created: int, model: str, include_usage: bool) -> None:
        self._base: dict[str, Any] = {
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self._include_usage = include_usage
        self._started: set[int] = set()
        self._tool_calls_seen: set[tuple[int, int]] = set()

    def chunks(self, delta: ChoiceDelta) -> list[dict[str, Any]]:
        """The chunk(s) a delta becomes: the choice's role chunk first, if it has not gone out yet."""
        out = []
        if delta.system_fingerprint and "system_fingerprint" not in self._base:
            self._base["system_fingerprint"] = delta.system_fingerprint
        if delta.index not in self._started:
            self._started.add(delta.index)
            role = {"role": "assistant", "content": "", "refusal": None}
            out.append(
                self._chunk(
                    [{"index": delta.index, "delta": role, "logprobs": None, "finish_reason": None}]
                )
            )
        body: dict[str, Any] = {}
        if delta.content:
            body["content"] = delta.content
        if delta.tool_calls:
            body["tool_calls"] = [self._tool_call(delta.index, piece) for piece in delta.tool_calls]
        if body or delta.finish_reason:
            choice = {
                "index": delta.index,
                "delta": body,
                "logprobs": _logprobs(delta.logprobs),
                "finish_reason": delta.finish_reason,
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

    def _tool_call(self, choice: int, piece: Any) -> dict[str, Any]:
        call: dict[str, Any] = {"index": piece.index}
        function: dict[str, str] = {}
        if (choice, piece.index) not in self._tool_calls_seen:
            self._tool_calls_seen.add((choice, piece.index))
            call["id"] = piece.id
            call["type"] = "function"
            function["name"] = piece.name or ""
        function["arguments"] = piece.arguments or ""
        call["function"] = function
        return call


def _logprobs(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    return None if entries is None else {"content": entries, "refusal": None}
