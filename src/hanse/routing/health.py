"""Route health: a circuit breaker per route, and Retry-After holds, behind a small interface.

    closed --(N failures in a row, or failure rate over the window)--> open
    open --(cooldown elapsed)--> half-open: one caller gets the probe
    half-open --probe succeeds--> closed;  --probe fails--> open (a fresh cooldown)

State lives in this process (`InMemoryHealth`); a shared store (Redis) can implement `Health` later,
which is why its methods are coroutines.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from hanse.config.schema import RoutingConfig

State = Literal["closed", "open", "half_open"]
STATE_VALUES: dict[State, float] = {"closed": 0.0, "half_open": 0.5, "open": 1.0}
# A Retry-After beyond this is taken as this: one bad header must not disable a route for days.
MAX_HOLD_S = 3600.0


class Health(Protocol):
    """What the router asks and tells about each route (keyed by `RoutePlan.key`)."""

    async def admits(self, key: str) -> bool:
        """Whether to call the route now; a half-open route admits one probe at a time."""

    async def succeeded(self, key: str) -> None:
        """The route answered."""

    async def failed(self, key: str) -> None:
        """The route failed (connection, timeout, 5xx, malformed answer...)."""

    async def rate_limited(self, key: str, retry_after_s: float) -> None:
        """The route answered 429: skip it for `retry_after_s`."""

    async def states(self) -> list[tuple[str, float]]:
        """Each known route's breaker: 0 closed, 0.5 half-open, 1 open (for /metrics)."""


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failures: int
    failure_rate: float
    window_s: float
    min_requests: int
    cooldown_s: float

    @classmethod
    def from_config(cls, config: RoutingConfig) -> BreakerSettings:
        return cls(
            failures=config.breaker_failures,
            failure_rate=config.breaker_failure_rate,
            window_s=config.breaker_window_s,
            min_requests=config.breaker_min_requests,
            cooldown_s=config.breaker_cooldown_s,
        )


@dataclass(slots=True)
class Breaker:
    """One route's breaker; every method takes the current time, so it is a pure state machine."""

    settings: BreakerSettings
    state: State = "closed"
    consecutive: int = 0
    opened_at: float = 0.0
    probe_until: float = 0.0
    held_until: float = 0.0
    outcomes: deque[tuple[float, bool]] = field(default_factory=deque)

    def admits(self, now: float) -> bool:
        if now < self.held_until:
            return False
        if self.state == "closed":
            return True
        if self.state == "open" and now < self.opened_at + self.settings.cooldown_s:
            return False
        if self.state == "half_open" and now < self.probe_until:
            return False
        # A probe that never reports back (its client went away) frees the slot after a cooldown.
        self.state, self.probe_until = "half_open", now + self.settings.cooldown_s
        return True

    def record(self, ok: bool, now: float) -> None:
        self.outcomes.append((now, ok))
        while self.outcomes and self.outcomes[0][0] < now - self.settings.window_s:
            self.outcomes.popleft()
        if ok:
            self.consecutive = 0
            if self.state != "closed":
                self.state = "closed"
                self.outcomes.clear()
            return
        self.consecutive += 1
        if self.state != "closed" or self._tripped():
            self.state, self.opened_at = "open", now

    def hold(self, until: float) -> None:
        self.held_until = max(self.held_until, until)

    def _tripped(self) -> bool:
        if self.consecutive >= self.settings.failures:
            return True
        failed = sum(1 for _, ok in self.outcomes if not ok)
        total = len(self.outcomes)
        return total >= self.settings.min_requests and failed / total >= self.settings.failure_rate


class InMemoryHealth:
    """Breakers in a dict: the health of one gateway process."""

    def __init__(
        self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._breakers: dict[str, Breaker] = {}

    def breaker(self, key: str) -> Breaker:
        found = self._breakers.get(key)
        if found is None:
            found = self._breakers[key] = Breaker(self._settings)
        return found

    async def admits(self, key: str) -> bool:
        return self.breaker(key).admits(self._clock())

    async def succeeded(self, key: str) -> None:
        self.breaker(key).record(True, self._clock())

    async def failed(self, key: str) -> None:
        self.breaker(key).record(False, self._clock())

    async def rate_limited(self, key: str, retry_after_s: float) -> None:
        self.breaker(key).hold(self._clock() + min(retry_after_s, MAX_HOLD_S))

    async def states(self) -> list[tuple[str, float]]:
        return [(key, STATE_VALUES[breaker.state]) for key, breaker in self._breakers.items()]
