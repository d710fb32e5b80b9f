"""What the core hands a face: a whole completion, or a stream of neutral events.

A stream is the provider's deltas as they come, then `Settled` once the meter is closed (the usage
charged, `billing_cost` and `environment_impact`), or `Failed` when it broke after the answer had
begun; nothing follows either. Each face renders these in its own wire shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from hanse.domain import ChoiceDelta, Completion, InferenceRequest, Usage
from hanse.errors import HanseError


@dataclass(frozen=True, slots=True)
class Settled:
    """The stream's end: the usage charged and the metering fields every face carries."""

    usage: Usage
    metered: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Failed:
    """The stream broke after the answer had begun (the meter is closed: what was sent is charged)."""

    error: HanseError


AnswerEvent = ChoiceDelta | Settled | Failed


async def close_events(events: AsyncIterator[AnswerEvent]) -> None:
    """Close a face's source of events (its `finally` settles the meter if nothing else did)."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


@dataclass(slots=True)
class Answer:
    """The core's answer to one request: `completion` (with `metered`) or `events`."""

    request: InferenceRequest
    model: str  # as the client named it
    input_tokens: int  # the planned count (the stream's first event can tell it)
    headers: dict[str, str] = field(default_factory=dict)
    completion: Completion | None = None
    metered: dict[str, Any] = field(default_factory=dict)
    events: AsyncIterator[AnswerEvent] | None = None
