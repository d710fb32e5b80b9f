"""Answers no model produced: an input railguard's block or a blueprint's override.

They cost nothing and consumed nothing (zero `billing_cost`, paid with the plan's first balance;
`environment_impact` with zero energy and the gateway as provider), yet each writes its ledger row
(`blocked` or `override`) through a zero reservation, like any other request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from hanse.answer import AnswerEvent, Settled
from hanse.auth import Principal
from hanse.billing import Billing
from hanse.blueprints.compose import DirectAnswer
from hanse.domain import Choice, ChoiceDelta, Completion, Usage
from hanse.impact import no_impact
from hanse.streaming import metered_fields

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


def direct_completion(answer: DirectAnswer, n: int) -> Completion:
    """The completion: every choice says the same, nothing consumed."""
    choices = [Choice(i, answer.content, answer.finish_reason) for i in range(n)]
    return Completion(choices, Usage())


async def direct_events(
    answer: DirectAnswer, n: int, metered: dict[str, Any]
) -> AsyncIterator[AnswerEvent]:
    """The same answer as stream events: each choice's content, then its finish, then settled."""
    for index in range(n):
        yield ChoiceDelta(index, content=answer.content)
    for index in range(n):
        yield ChoiceDelta(index, finish_reason=answer.finish_reason)
    yield Settled(Usage(), metered)
