"""A streamed answer as SSE: chunks as they come, metering on the final chunk, late errors as events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from hanse.billing import Charge
from hanse.domain import ChoiceDelta, InferenceRequest, StreamEvent, Usage
from hanse.errors import INTERNAL, HanseError
from hanse.impact import Impact
from hanse.metering import Meter
from hanse.providers.base import ProviderFailure
from hanse.routing import Served, mid_stream_error
from hanse.wire.response import ChunkWriter
from hanse.wire.sse import DONE, sse_event

log = logging.getLogger("hanse.streaming")


def metered_fields(impact: Impact | None, charge: Charge) -> dict[str, Any]:
    """`billing_cost` and `environment_impact`, as an answer or a final chunk carries them."""
    fields: dict[str, Any] = {"billing_cost": charge.body()}
    if impact is not None:
        fields["environment_impact"] = impact.body()
    return fields


async def sse_stream(
    first: StreamEvent,
    events: AsyncGenerator[StreamEvent, None],
    writer: ChunkWriter,
    request: InferenceRequest,
    served: Served,
    meter: Meter,
    input_tokens: int,
    trace_request_id: str,
) -> AsyncIterator[bytes]:
    """Frame events as SSE and settle the meter exactly once, whatever ends the stream.

    A chunk that finishes a choice is held until the next event, so that the stream's final chunk
    can carry `environment_impact` and `billing_cost` without delaying any content.
    """
    held: dict[str, Any] | None = None
    delivered: list[str] = []  # the pieces sent: counted when no usage comes, or the stream is cut
    status = "ok"  # or `blocked`, when an output railguard ended the stream
    deadline = meter.stream_deadline()
    try:
        event: StreamEvent | None = first
        while event is not None:
            if isinstance(event, Usage):
                impact, charge = await meter.close(status, served.route, event, delivered)
                event = meter.usage or event  # counted by the gateway where the provider did not
                if request.include_usage or held is None:
                    if held is not None:
                        yield sse_event(held)
                    held = writer.final_chunk(event if request.include_usage else None)
                held.update(metered_fields(impact, charge))
                yield sse_event(held)
                held = None
            else:
                status = "blocked" if event.finish_reason == "blocked" else status
                delivered += _texts(event)
                for chunk in writer.chunks(event):
                    if held is not None:
                        yield sse_event(held)
                        held = None
                    if chunk["choices"] and chunk["choices"][0]["finish_reason"]:
                        held = chunk
                    else:
                        yield sse_event(chunk)
            try:
                async with asyncio.timeout_at(deadline) as bound:
                    event = await anext(events, None)
            except TimeoutError as exc:
                if not bound.expired():
                    raise
                raise meter.overran() from exc
        yield DONE
    except Exception as exc:
        error = _late_error(exc, served, trace_request_id)
        if held is not None:
            yield sse_event(held)
        if not meter.closed:
            await meter.close("cut", served.route, Usage(source="missing"), delivered)
        yield sse_event(error.body())
    finally:
        if not meter.closed:  # the client went away: charge what it was sent
            await meter.close("cancelled", served.route, Usage(source="missing"), delivered)
        await events.aclose()


def _texts(delta: ChoiceDelta) -> list[str]:
    """What a delta delivers that the model generated: text, reasoning, tool-call names and
    arguments (a custom call's input), an audio answer's transcript."""
    texts = [text for text in (delta.content, delta.refusal, delta.reasoning) if text]
    for call in delta.tool_calls or []:
        texts += [text for text in (call.name, call.arguments) if text]
    # Of audio output, its transcript (its base64 data is no measure of tokens).
    transcript = (delta.audio or {}).get("transcript")
    if isinstance(transcript, str) and transcript:
        texts.append(transcript)
    return texts


def _late_error(exc: Exception, served: Served, request_id: str) -> HanseError:
    """The error event for a failure after the 200 went out."""
    if isinstance(exc, ProviderFailure):
        return mid_stream_error(exc, served.route)
    if isinstance(exc, HanseError):
        return exc
    log.exception("stream failed", extra={"request_id": request_id})
    return HanseError(INTERNAL)
