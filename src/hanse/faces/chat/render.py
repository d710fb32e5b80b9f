"""The core's answer as OpenAI's chat completion: a `chat.completion` body, or its SSE chunks.

In a stream, a chunk that finishes a choice is held until the next event, so that the stream's
final chunk can carry `environment_impact` and `billing_cost` without delaying any content: the
usage chunk when the client asked for usage, else the last finishing chunk.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from hanse.answer import Answer, Failed, Settled, close_events
from hanse.wire.response import ChunkWriter, completion_body
from hanse.wire.sse import DONE, sse_event


def response_id() -> str:
    return "chatcmpl-" + secrets.token_urlsafe(18)


def chat_body(answer: Answer) -> dict[str, Any]:
    assert answer.completion is not None
    body = completion_body(
        answer.completion,
        id=response_id(),
        created=int(time.time()),
        model=answer.model,
        legacy_functions=answer.request.legacy_functions,
    )
    return body | answer.metered


async def chat_sse(answer: Answer) -> AsyncIterator[bytes]:
    """Frame the answer's events as SSE, ending with `[DONE]` (or an error event after a failure)."""
    assert answer.events is not None
    events = answer.events
    request = answer.request
    writer = ChunkWriter(
        id=response_id(),
        created=int(time.time()),
        model=answer.model,
        include_usage=request.include_usage,
        legacy_functions=request.legacy_functions,
    )
    held: dict[str, Any] | None = None
    try:
        async for event in events:
            if isinstance(event, Settled):
                if request.include_usage or held is None:
                    if held is not None:
                        yield sse_event(held)
                    held = writer.final_chunk(event.usage if request.include_usage else None)
                yield sse_event(held | event.metered)
                held = None
            elif isinstance(event, Failed):
                if held is not None:
                    yield sse_event(held)
                yield sse_event(event.error.body())
                return
            else:
                for chunk in writer.chunks(event):
                    if held is not None:
                        yield sse_event(held)
                        held = None
                    if chunk["choices"] and chunk["choices"][0]["finish_reason"]:
                        held = chunk
                    else:
                        yield sse_event(chunk)
        if held is not None:
            yield sse_event(held)
        yield DONE
    finally:
        await close_events(events)
