"""Calls a model's routes in turn until one answers; gathers every failure into one error.

Ranking by flavor, health and budgets come with the routing work; today routes are tried in
catalog order, each once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

from hanse.config.schema import ModelConfig, RouteConfig
from hanse.domain import Completion, InferenceRequest, StreamEvent
from hanse.errors import (
    ALL_PROVIDERS_FAILED,
    UPSTREAM_RATE_LIMITED,
    UPSTREAM_TIMEOUT,
    HanseError,
)
from hanse.providers.base import Provider, ProviderFailure

log = logging.getLogger("hanse.routing")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed try, as the client may see it (no URL, no secret)."""

    route: str
    reason: str
    status: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"route": self.route, "reason": self.reason, "status": self.status}


@dataclass(slots=True)
class Served:
    """Which route answered, after how many attempts."""

    route: RouteConfig
    attempts: int


class Router:
    """Picks routes for a model and calls them."""

    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self._providers = providers

    def provider(self, route: RouteConfig) -> Provider:
        return self._providers[route.provider]

    def primary(self, model: ModelConfig) -> RouteConfig:
        """The route tried first (its provider counts the tokens for the context check)."""
        return model.routes[0]

    async def complete(
        self, model: ModelConfig, request: InferenceRequest
    ) -> tuple[Completion, Served]:
        failures: list[tuple[Attempt, ProviderFailure]] = []
        for route in model.routes:
            try:
                completion = await self.provider(route).complete(request, route)
                return completion, Served(route, len(failures) + 1)
            except ProviderFailure as failure:
                failures.append((_attempt(route, failure), failure))
        raise _exhausted(failures)

    async def stream(
        self, model: ModelConfig, request: InferenceRequest
    ) -> tuple[StreamEvent, AsyncGenerator[StreamEvent, None], Served]:
        """The first event and the rest: a route that fails before its first event is skipped."""
        failures: list[tuple[Attempt, ProviderFailure]] = []
        for route in model.routes:
            events = self.provider(route).stream(request, route)
            try:
                first = await anext(events)
                return first, events, Served(route, len(failures) + 1)
            except ProviderFailure as failure:
                await events.aclose()
                failures.append((_attempt(route, failure), failure))
        raise _exhausted(failures)


def _attempt(route: RouteConfig, failure: ProviderFailure) -> Attempt:
    log.warning("route %s failed: %s", route.id, failure)
    return Attempt(route=route.id, reason=failure.kind, status=failure.status)


def _exhausted(failures: list[tuple[Attempt, ProviderFailure]]) -> HanseError:
    attempts = [a.as_dict() for a, _ in failures]
    kinds = [f.kind for _, f in failures]
    details: dict[str, Any] = {"attempts": attempts}
    if kinds and all(k == "rate_limited" for k in kinds):
        waits = [f.retry_after for _, f in failures if f.retry_after is not None]
        headers = {"Retry-After": str(int(min(waits)) or 1)} if waits else {}
        return HanseError(UPSTREAM_RATE_LIMITED, details=details, headers=headers)
    if kinds and kinds[-1] == "timeout":
        return HanseError(UPSTREAM_TIMEOUT, details=details)
    return HanseError(ALL_PROVIDERS_FAILED, details=details)


def mid_stream_error(failure: ProviderFailure, route: RouteConfig) -> HanseError:
    """A failure after the first byte reached the client: it ends the stream as an error event."""
    error = UPSTREAM_TIMEOUT if failure.kind == "timeout" else ALL_PROVIDERS_FAILED
    return HanseError(
        error,
        "The provider failed in the middle of the answer.",
        details={"attempts": [_attempt(route, failure).as_dict()]},
    )
