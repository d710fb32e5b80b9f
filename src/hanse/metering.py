"""Metering one request: the hold before the call, impact and settlement after it.

The pipeline opens a `Meter` once the route candidates are known and closes it exactly once, with
the usage that was delivered: a success, a failure (nothing delivered, nothing charged), a stream
cut by the provider or abandoned by the client (what was delivered is charged). Closing is shielded
from cancellation, so a client that hangs up mid-stream cannot leave a hold behind.

Where the provider reported no usage (or counts that cannot be: negative ones), the meter counts
it with the model's tokenizer: the prompt as counted before the call, the completion from the text
and tool calls actually delivered; the ledger row says whether usage was reported, counted or
estimated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio

from hanse import structured
from hanse.auth import Principal
from hanse.billing import Billing, Charge, worst_case_pico
from hanse.config.schema import Catalog, ModelConfig, RouteConfig
from hanse.domain import InferenceRequest, Usage
from hanse.errors import UPSTREAM_TIMEOUT, HanseError
from hanse.impact import Impact, estimate_impact
from hanse.metrics import Metrics
from hanse.ratelimits import RateLimiter
from hanse.storage.ledger import Reservation
from hanse.tokens import TokenCount, count_texts, tokenizer_for

log = logging.getLogger("hanse.metering")


@dataclass(frozen=True, slots=True)
class Metering:
    """What every meter needs: the billing, the catalog's impact figures, the counters, and the
    rate limits that count each answer's tokens."""

    billing: Billing
    catalog: Catalog
    metrics: Metrics
    rate_limits: RateLimiter


class Meter:
    """One request's reservation, closed once with what the request really used."""

    def __init__(
        self,
        metering: Metering,
        principal: Principal,
        model: ModelConfig,
        reservation: Reservation,
        prompt: TokenCount,
    ) -> None:
        self._metering = metering
        self._principal = principal
        self._billing = metering.billing
        self._catalog = metering.catalog
        self._model = model
        self._reservation = reservation
        self._prompt = prompt
        self._started = time.perf_counter()
        self.closed = False
        # What was settled: the provider's usage, or the gateway's count where it sent none.
        self.usage: Usage | None = None

    @classmethod
    async def open(
        cls,
        metering: Metering,
        principal: Principal,
        model: ModelConfig,
        request: InferenceRequest,
        routes: Sequence[RouteConfig],
        input_tokens: int,
        request_id: str,
        *,
        repairs: bool = False,
    ) -> Meter:
        """Reserve the worst case over the candidate routes: input + every choice's max output;
        with `repairs` (the structured-output fallback may run), one repair call per choice too."""
        prompt = (
            input_tokens
            if isinstance(input_tokens, TokenCount)
            else TokenCount(input_tokens, input_tokens, "estimated", exact=False)
        )
        per_choice = request.max_tokens or model.output_limit
        output_tokens = per_choice * request.n
        if repairs:
            input_tokens += structured.extra_input_tokens(request, input_tokens, per_choice)
            output_tokens *= 2
        amount = worst_case_pico(routes, input_tokens, output_tokens)
        reservation = await metering.billing.reserve(principal, amount, request_id, model.id)
        return cls(metering, principal, model, reservation, prompt)

    def stream_deadline(self) -> float:
        """When a stream starting now must end (event-loop time): `[routing] stream_timeout_s`."""
        return asyncio.get_running_loop().time() + self._catalog.routing.stream_timeout_s

    def overran(self) -> HanseError:
        """The error that ends a stream past its bound."""
        limit = self._catalog.routing.stream_timeout_s
        return HanseError(
            UPSTREAM_TIMEOUT,
            f"The answer ran longer than this gateway allows a stream ({limit:g} s).",
            details={"stream_timeout_s": limit},
        )

    async def close(
        self,
        status: str,
        route: RouteConfig | None,
        usage: Usage,
        delivered: Sequence[str] = (),
    ) -> tuple[Impact | None, Charge]:
        """Estimate the impact of what ran and settle its cost (shielded from cancellation).
        `delivered`: the texts the client received (contents, tool-call names and arguments), which
        are counted when the provider reported no usage."""
        self.closed = True
        if route is not None:
            usage = self._billable(usage, delivered)
        self.usage = usage
        impact = None
        if route is not None:
            impact = estimate_impact(
                provider=self._catalog.provider(route.provider),
                route=route,
                model=self._model,
                usage=usage,
                latency_s=time.perf_counter() - self._started,
                at=datetime.now(UTC),
                hourly=self._catalog.impact.hourly_carbon_csv,
            )
        with anyio.CancelScope(shield=True):
            charge = await self._billing.settle(
                self._reservation, status=status, route=route, usage=usage, impact=impact
            )
            await self._metering.rate_limits.spend(self._principal, usage.total_tokens)
        if route is not None:
            self._metering.metrics.answered(self._model.id, route.id, usage, impact)
        return impact, charge

    def _billable(self, usage: Usage, delivered: Sequence[str]) -> Usage:
        """The provider's usage, or the gateway's own count where it reported none (or the
        impossible: a negative count)."""
        counts = (usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens)
        if usage.source != "missing" and min(counts) >= 0:
            return usage
        if usage.source != "missing":
            log.error("negative token counts from the provider; counting", extra={"usage": counts})
        tokenizer = tokenizer_for(self._catalog, self._model)
        counted = tokenizer.exact and self._prompt.source == "counted"
        # The text as a whole (pieces cut mid-word would count more), and never less than one
        # token per piece: a streamed piece is at least one generated token.
        pieces = sum(1 for text in delivered if text)
        completion = max(count_texts(tokenizer, ["".join(delivered)]), pieces)
        return Usage(int(self._prompt), completion, source="counted" if counted else "estimated")

    async def fail(self, status: str = "failed") -> None:
        """Release the whole hold: nothing was delivered."""
        if not self.closed:
            await self.close(status, None, Usage())
