"""One request's attempts: which route next, within the attempt bound and the time budget.

Routes are tried in the plan's order, each at most once; a route whose health does not admit it now
(open circuit, Retry-After) is deferred behind the others and tried only when they have all failed.
Every failure is gathered into the one error the client sees.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hanse.config.schema import RouteConfig
from hanse.errors import (
    ALL_PROVIDERS_FAILED,
    UPSTREAM_RATE_LIMITED,
    UPSTREAM_TIMEOUT,
    HanseError,
)
from hanse.providers.base import ProviderFailure

log = logging.getLogger("hanse.routing")
ATTEMPTS_HEADER = "X-Hanse-Attempts"  # on every chat answer: how many routes were tried


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed try, as the client may see it (no URL, no secret)."""

    route: str
    reason: str
    status: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"route": self.route, "reason": self.reason, "status": self.status}


class Attempts:
    """The bounded tries of one request."""

    def __init__(
        self,
        routes: list[RouteConfig],
        admits: Callable[[RouteConfig], Awaitable[bool]],
        max_attempts: int,
        budget_s: float,
    ) -> None:
        self._pending = list(routes)
        self._deferred: list[RouteConfig] = []
        self._admits = admits
        self._max = max_attempts
        # The loop's own clock, which its timeouts use (uvloop's lags time.monotonic by a little).
        self._clock = asyncio.get_running_loop().time
        self.deadline = self._clock() + budget_s
        self.count = 0
        self.failures: list[tuple[Attempt, ProviderFailure]] = []

    async def next(self) -> RouteConfig | None:
        """The route to try now, or None when the routes, the attempts or the time ran out."""
        if self.count >= self._max or self._clock() >= self.deadline:
            return None
        route = None
        while self._pending and route is None:
            candidate = self._pending.pop(0)
            # Asked only right before the call: a half-open route hands out its probe here.
            if await self._admits(candidate):
                route = candidate
            else:
                self._deferred.append(candidate)
        if route is None and self._deferred:
            route = self._deferred.pop(0)
        if route is not None:
            self.count += 1
        return route

    def failed(self, route: RouteConfig, failure: ProviderFailure) -> None:
        log.warning("route %s failed: %s", route.id, failure)
        self.failures.append((Attempt(route.id, failure.kind, failure.status), failure))

    def error(self) -> HanseError:
        """The error when every attempt failed: 3108 if all were rate-limited, 3107 if the last
        timed out, else 3103; `details.attempts` lists each in order."""
        details: dict[str, Any] = {"attempts": [a.as_dict() for a, _ in self.failures]}
        headers = {ATTEMPTS_HEADER: str(self.count)}
        kinds = [f.kind for _, f in self.failures]
        if kinds and all(k == "rate_limited" for k in kinds):
            waits = [f.retry_after for _, f in self.failures if f.retry_after is not None]
            # Whole seconds, rounded up: a client that waits that long finds a route free again.
            if waits:
                headers["Retry-After"] = str(max(1, math.ceil(min(waits))))
            return HanseError(UPSTREAM_RATE_LIMITED, details=details, headers=headers)
        if kinds and kinds[-1] == "timeout":
            return HanseError(UPSTREAM_TIMEOUT, details=details, headers=headers)
        return HanseError(ALL_PROVIDERS_FAILED, details=details, headers=headers)


def mid_stream_error(failure: ProviderFailure, route: RouteConfig) -> HanseError:
    """A failure after the first byte reached the client: it ends the stream as an error event."""
    error = UPSTREAM_TIMEOUT if failure.kind == "timeout" else ALL_PROVIDERS_FAILED
    log.warning("route %s failed mid-stream: %s", route.id, failure)
    return HanseError(
        error,
        "The provider failed in the middle of the answer.",
        details={"attempts": [Attempt(route.id, failure.kind, failure.status).as_dict()]},
    )
