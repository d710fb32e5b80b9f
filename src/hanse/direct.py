"""Answers no model produced: an input railguard's block or a blueprint's override.

They cost nothing and consumed nothing (zero `billing_cost`, paid with the plan's first balance;
`environment_impact` with zero energy and the gateway as provider), yet each writes its ledger row
(`blocked` or `override`) through a zero reservation, like any other request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from hanse.auth import Principal
from hanse.billing import Billing
from hanse.blueprints.compose import DirectAnswer
from hanse.domain import Choice, ChoiceDelta, Completion, Usage
from hanse.impact import no_impact
from hanse.streaming import metered_fields
from hanse.wire.response import ChunkWriter, completion_body
from hanse.wire.sse import DONE, sse_event

PROVIDER_ID = "hanse"


async def settle_direct(
    billing: Billing,
    principal: Principal,
    answer: DirectAnswer,
    *,
    model: str,
    request_id: str,
    location: str,
) -> dict[str, Any]:
    """Record the answer in the ledger: the `billing_cost` and `environment_impact` it carries."""
    reservation = await billing.reserve(principal, 0, request_id, model)
    charge = await billing.settle(
        reservation, status=answer.status, route=None, usage=Usage(), impact=None
    )
    return metered_fields(no_impact(PROVIDER_ID, location), charge)


def direct_body(
    answer: DirectAnswer, n: int, metered: dict[str, Any], *, id: str, created: int, model: str
) -> dict[str, Any]:
    """The chat.completion: every choice says the same."""
    choices = [Choice(i, answer.content, answer.finish_reason) for i in range(n)]
    body = completion_body(Completion(choices, Usage()), id=id, created=created, model=model)
    return body | metered


async def direct_stream(
    answer: DirectAnswer, n: int, metered: dict[str, Any], writer: ChunkWriter, include_usage: bool
) -> AsyncIterator[bytes]:
    """The same answer as SSE: content, finish, metering on the final chunk, [DONE]."""
    for index in range(n):
        for chunk in writer.chunks(ChoiceDelta(index, content=answer.content)):
            yield sse_event(chunk)
    finishes = [
        chunk
        for index in range(n)
        for chunk in writer.chunks(ChoiceDelta(index, finish_reason=answer.finish_reason))
    ]
    final = writer.final_chunk(Usage()) if include_usage else finishes.pop()
    for chunk in finishes:
        yield sse_event(chunk)
    yield sse_event(final | metered)
    yield DONE
