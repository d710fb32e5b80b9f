"""The router: plans a request's routes (filter, rank), then calls them with failover.

`plan` calls no provider, so the pipeline can reserve money against the plan's routes before any
call. `complete` and `stream` try the plan's routes in order (see `attempts`), feed every outcome to
route health, and every success to the speed measurements that ranking reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass

from hanse import structured
from hanse.config.schema import Catalog, ModelConfig, RouteConfig
from hanse.domain import (
    ChoiceDelta,
    Completion,
    InferenceRequest,
    ProviderPreferences,
    StreamEvent,
    Usage,
)
from hanse.errors import HanseError
from hanse.metrics import Metrics
from hanse.providers.base import Provider, ProviderFailure
from hanse.routing.attempts import ATTEMPTS_HEADER, Attempts
from hanse.routing.filters import NO_PREFERENCES, arrange, eligible, no_route
from hanse.routing.health import BreakerSettings, Health, InMemoryHealth
from hanse.routing.ranking import (
    FLAVOR_WEIGHTS,
    REFERENCE_OUTPUT_TOKENS,
    Factors,
    carbon_intensity,
    expected_seconds,
    request_price,
    scores,
)
from hanse.routing.speed import SpeedBook
from hanse.tokens import TokenCount, count_prompt, exact_count, tokenizer_for

log = logging.getLogger("hanse.routing")


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The routes that may serve one request, in the order they will be tried."""

    model: ModelConfig
    routes: list[RouteConfig]

    def key(self, route: RouteConfig) -> str:
        return route_key(self.model, route)

    def may_repair(self, request: InferenceRequest) -> bool:
        """Some route of the plan may ask again for `response_format`: the fallback's repair, or
        a native route's second try after an answer that missed the schema."""
        return any(structured.mode(self.model, r, request) is not None for r in self.routes)


def route_key(model: ModelConfig, route: RouteConfig) -> str:
    """A route's name in health and speed records: one provider serving one model."""
    return f"{route.id}@{model.id}"


@dataclass(slots=True)
class Served:
    """Which route answered, after how many attempts, in how long (for a stream: until its end),
    and how it enforced `response_format` (None when plain text was asked)."""

    route: RouteConfig
    attempts: int
    latency_s: float
    structured_output: structured.Mode | None = None


class Router:
    """Plans and calls routes; health and speed live here, one per gateway process."""

    def __init__(
        self,
        catalog: Catalog,
        providers: Mapping[str, Provider],
        health: Health | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._catalog = catalog
        self._metrics = metrics or Metrics()
        self._providers = providers
        self._config = catalog.routing
        self._health = health or InMemoryHealth(BreakerSettings.from_config(catalog.routing))
        self._speed = SpeedBook(catalog.routing.speed_smoothing)

    async def circuit_states(self) -> list[tuple[str, float]]:
        """Every known route's breaker state (for /metrics)."""
        return await self._health.states()

    def provider(self, route: RouteConfig) -> Provider:
        return self._providers[route.provider]

    def input_tokens(self, model: ModelConfig, request: InferenceRequest) -> TokenCount:
        """The prompt's tokens: exact where a provider of the model counts them itself (its chat
        template applied), else counted with the model's tokenizer (or estimated), with every
        input the provider receives: contents, names, tool calls, tools, the response schema."""
        for route in model.routes:
            counted = self.provider(route).count_input_tokens(request, model)
            if counted is not None:
                return exact_count(counted + request.image_tokens)
        return count_prompt(tokenizer_for(self._catalog, model), request)

    def plan(
        self,
        model: ModelConfig,
        request: InferenceRequest,
        flavor: str,
        preferences: ProviderPreferences | None,
        input_tokens: int,
        *,
        reasoning: bool = False,
    ) -> RoutePlan:
        """Filter the model's routes (INFERENCE_3104 when none is left) and rank them for `flavor`;
        `reasoning` puts routes marked for reasoning quality first."""
        preferences = preferences or NO_PREFERENCES
        candidates, excluded = eligible(model, request, preferences, input_tokens)
        if not candidates:
            raise no_route(model, excluded)
        output_tokens = request.max_tokens or REFERENCE_OUTPUT_TOKENS
        factors = []
        for route in candidates:
            provider = self._catalog.provider(route.provider)
            speed = self._speed.estimate(route_key(model, route), provider)
            factors.append(
                Factors(
                    price_eur=request_price(route, input_tokens, output_tokens),
                    seconds=expected_seconds(speed, output_tokens),
                    carbon_g_per_kwh=carbon_intensity(provider),
                )
            )
        ranking = scores(factors, FLAVOR_WEIGHTS[flavor])
        score = {r.id: s for r, s in zip(candidates, ranking, strict=True)}
        # A stable sort: equal scores keep the catalog's order. Native structured output first.
        ranked = sorted(
            candidates,
            key=lambda r: (
                structured.mode(model, r, request) == "fallback",
                reasoning and not self._reasoning(r),
                -score[r.id],
            ),
        )
        routes = arrange(ranked, preferences)
        log.debug(
            "plan %s:%s %s", model.id, flavor, [(r.id, round(score[r.id], 4)) for r in routes]
        )
        return RoutePlan(model=model, routes=routes)

    async def complete(
        self, plan: RoutePlan, request: InferenceRequest
    ) -> tuple[Completion, Served]:
        tries = self._attempts(plan)
        while (route := await tries.next()) is not None:
            key = plan.key(route)
            started = time.perf_counter()
            try:
                async with asyncio.timeout_at(tries.deadline):
                    completion = await self._complete(plan.model, route, request)
            except (TimeoutError, ProviderFailure) as exc:
                await self._failed(tries, plan, route, _failure(exc))
                continue
            except HanseError as error:  # the provider answered: the request is at fault
                await self._health.succeeded(key)
                error.headers.setdefault(ATTEMPTS_HEADER, str(tries.count))
                raise
            latency = time.perf_counter() - started
            await self._health.succeeded(key)
            provider = self._catalog.provider(route.provider)
            self._speed.record_whole(key, provider, latency, completion.usage.completion_tokens)
            return completion, self._served(plan, route, request, tries.count, latency)
        raise tries.error()

    async def stream(
        self, plan: RoutePlan, request: InferenceRequest
    ) -> tuple[StreamEvent, AsyncGenerator[StreamEvent, None], Served]:
        """The first event and the rest. A route is committed by its first event that carries some
        of the answer (see `_opening`): until then a failure, or a stream that ends without an
        answer, is failed over. The time budget bounds the wait for that event, the provider's
        read timeout the rest."""
        tries = self._attempts(plan)
        while (route := await tries.next()) is not None:
            key = plan.key(route)
            started = time.perf_counter()
            events = self._stream(plan.model, route, request)
            try:
                async with asyncio.timeout_at(tries.deadline):
                    first = await _opening(events)
            except (TimeoutError, ProviderFailure) as exc:
                await events.aclose()
                await self._failed(tries, plan, route, _failure(exc))
                continue
            except HanseError as error:
                await events.aclose()
                await self._health.succeeded(key)
                error.headers.setdefault(ATTEMPTS_HEADER, str(tries.count))
                raise
            served = self._served(plan, route, request, tries.count, time.perf_counter() - started)
            follow = self._follow(plan, route, events, served, started)
            return first, follow, served
        raise tries.error()

    async def _follow(
        self,
        plan: RoutePlan,
        route: RouteConfig,
        events: AsyncGenerator[StreamEvent, None],
        served: Served,
        started: float,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Relay the rest of a stream; its end updates `served.latency_s`, health and speed."""
        key = plan.key(route)
        ttft_s = served.latency_s
        completion_tokens = 0
        try:
            async for event in events:
                if isinstance(event, Usage):
                    completion_tokens = event.completion_tokens
                yield event
        except ProviderFailure as failure:
            self._metrics.failed_attempts.labels(plan.model.id, route.id, failure.kind).inc()
            await self._health.failed(key)
            raise
        else:
            await self._health.succeeded(key)
            provider = self._catalog.provider(route.provider)
            rest_s = time.perf_counter() - started - ttft_s
            self._speed.record_stream(key, provider, ttft_s, completion_tokens, rest_s)
        finally:
            served.latency_s = time.perf_counter() - started
            await events.aclose()

    async def _complete(
        self, model: ModelConfig, route: RouteConfig, request: InferenceRequest
    ) -> Completion:
        provider = self.provider(route)
        mode = structured.mode(model, route, request)
        if mode == "fallback":
            return await structured.complete(provider, model, request, route)
        completion = await provider.complete(request, route)
        if mode == "native":
            return await structured.verified(provider, request, route, completion)
        return completion

    def _stream(
        self, model: ModelConfig, route: RouteConfig, request: InferenceRequest
    ) -> AsyncGenerator[StreamEvent, None]:
        provider = self.provider(route)
        mode = structured.mode(model, route, request)
        if mode == "fallback":
            return structured.stream(provider, model, request, route)
        if mode == "native" and self._catalog.provider(route.provider).kind != "local":
            # The embedded engine checks its own grammar's answers; an upstream's are checked here.
            return structured.checked_stream(
                provider.stream(request, route), request, forced_tool=False
            )
        return provider.stream(request, route)

    @staticmethod
    def _served(
        plan: RoutePlan, route: RouteConfig, request: InferenceRequest, count: int, latency: float
    ) -> Served:
        mode = structured.mode(plan.model, route, request)
        return Served(route, count, latency, structured_output=mode)

    def _attempts(self, plan: RoutePlan) -> Attempts:
        async def admits(route: RouteConfig) -> bool:
            return await self._health.admits(plan.key(route))

        return Attempts(
            plan.routes, admits, self._config.max_attempts, self._config.request_timeout_s
        )

    async def _failed(
        self, tries: Attempts, plan: RoutePlan, route: RouteConfig, failure: ProviderFailure
    ) -> None:
        tries.failed(route, failure)
        self._metrics.failed_attempts.labels(plan.model.id, route.id, failure.kind).inc()
        key = plan.key(route)
        if failure.kind == "rate_limited":
            hold = failure.retry_after
            await self._health.rate_limited(
                key, self._config.rate_limit_cooldown_s if hold is None else hold
            )
        else:
            await self._health.failed(key)

    def _reasoning(self, route: RouteConfig) -> bool:
        return route.reasoning or self._catalog.provider(route.provider).reasoning


async def _opening(events: AsyncGenerator[StreamEvent, None]) -> ChoiceDelta:
    """A stream's first delta that carries some of the answer (content, tool calls, reasoning, a
    refusal, logprobs or a finish). The empty ones before it (a role-only chunk) are dropped,
    their metadata kept on it: the client's chunks open each choice themselves."""
    fingerprint = tier = None
    async for event in events:
        if isinstance(event, Usage):
            break
        if event.carries_answer():
            event.system_fingerprint = event.system_fingerprint or fingerprint
            event.service_tier = event.service_tier or tier
            return event
        fingerprint, tier = fingerprint or event.system_fingerprint, tier or event.service_tier
    raise ProviderFailure("malformed", "the provider's stream ended without an answer")


def _failure(exc: BaseException) -> ProviderFailure:
    if isinstance(exc, ProviderFailure):
        return exc
    return ProviderFailure("timeout", "the request's time budget ran out")
