"""Assembles a stream of deltas into a whole answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from hanse.domain import Choice, Completion, StreamEvent, ToolCall, ToolKind, Usage


async def collect_stream(events: AsyncIterator[StreamEvent]) -> Completion:
    """Gather every choice's deltas; the stream's `Usage` becomes the answer's."""
    texts: dict[int, list[str]] = {}
    logprobs: dict[int, list[dict[str, object]]] = {}
    calls: dict[int, dict[int, dict[str, str]]] = {}
    kinds: dict[tuple[int, int], ToolKind] = {}
    audio: dict[int, dict[str, Any]] = {}
    finish: dict[int, str] = {}
    usage = Usage()
    async for event in events:
        if isinstance(event, Usage):
            usage = event
            continue
        texts.setdefault(event.index, [])
        if event.content:
            texts[event.index].append(event.content)
        if event.logprobs:
            logprobs.setdefault(event.index, []).extend(event.logprobs)
        for piece in event.tool_calls or []:
            call = calls.setdefault(event.index, {}).setdefault(
                piece.index, {"id": "", "name": "", "arguments": ""}
            )
            call["id"] = piece.id or call["id"]
            call["name"] += piece.name or ""
            call["arguments"] += piece.arguments or ""
            if piece.kind is not None:
                kinds.setdefault((event.index, piece.index), piece.kind)
        if event.audio:
            _add_audio(audio.setdefault(event.index, {}), event.audio)
        if event.finish_reason:
            finish[event.index] = event.finish_reason
    choices = [
        Choice(
            index=index,
            content="".join(texts[index]) if texts[index] or index not in calls else None,
            finish_reason=finish.get(index, "stop"),  # type: ignore[arg-type]
            tool_calls=[
                ToolCall(c["id"], c["name"], c["arguments"], kinds.get((index, i), "function"))
                for i, c in calls.get(index, {}).items()
            ],
            logprobs=logprobs.get(index),
            audio=audio.get(index),
        )
        for index in sorted(texts)
    ]
    return Completion(choices=choices, usage=usage)


def _add_audio(whole: dict[str, Any], piece: dict[str, Any]) -> None:
    """Audio output pieces: `data` and `transcript` are appended, `id` and `expires_at` kept."""
    for name, value in piece.items():
        if name in ("data", "transcript"):
            whole[name] = whole.get(name, "") + value
        else:
            whole[name] = value
