"""A streamed answer, metered: the provider's deltas as they come, the meter settled exactly once
whatever ends the stream, late failures as a `Failed` event (hanse.answer)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

from hanse.answer import AnswerEvent, Failed, Settled
from hanse.billing import Charge
from hanse.domain import ChoiceDelta, StreamEvent, Usage
from hanse.errors import INTERNAL, HanseError
from hanse.impact import Impact
from hanse.metering import Meter
from hanse.providers.base import ProviderFailure
from hanse.routing import Served, mid_stream_error
from hanse.trace import Trace

log = logging.getLogger("hanse.streaming")


def metered_fields(impact: Impact | None, charge: Charge) -> dict[str, Any]:
    """`billing_cost` and `environment_impact`, as an answer or its stream's last event carries them."""
    fields: dict[str, Any] = {"billing_cost": charge.body()}
    if impact is not None:
        fields["environment_impact"] = impact.body()
    return fields


async def metered_events(
    first: StreamEvent,
    events: AsyncGenerator[StreamEvent, None],
    served: Served,
    meter: Meter,
    trace: Trace,
) -> AsyncGenerator[AnswerEvent, None]:
    """The stream's deltas, then `Settled` when its usage comes (or `Failed` if it breaks): the
    meter is closed exactly once, charging what was delivered when the stream is cut or left."""
    delivered: list[str] = []  # the pieces sent: counted when no usage comes, or the stream is cut
    status = "ok"  # or `blocked`, when an output railguard ended the stream
    deadline = meter.stream_deadline()
    try:
        event: StreamEvent | None = first
        while event is not None:
            if isinstance(event, Usage):
                impact, charge = await meter.close(status, served.route, event, delivered)
                # Counted by the gateway where the provider did not report it.
                trace.usage = meter.usage or event
                yield Settled(trace.usage, metered_fields(impact, charge))
            else:
                status = "blocked" if event.finish_reason == "blocked" else status
                if event.finish_reason is not None:
                    trace.finish_reasons.append(event.finish_reason)
                delivered += _texts(event)
                yield event
            try:
                async with asyncio.timeout_at(deadline) as bound:
                    event = await anext(events, None)
            except TimeoutError as exc:
                if not bound.expired():
                    raise
                raise meter.overran() from exc
    except Exception as exc:
        error = _late_error(exc, served, trace.request_id)
        if not meter.closed:
            await meter.close("cut", served.route, Usage(source="missing"), delivered)
        yield Failed(error)
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
