"""The arithmetic of a limit of L per minute, as GCRA (a bucket of L refilled continuously).

Each limit keeps one number per account, its *theoretical arrival time* `tat`: the moment the
bucket would be full again. A unit costs one interval (60 s / L) and fits while
`tat - now + interval <= 60 s` (plus a millisecond at most of slack for float rounding). A request
takes one unit of its requests bucket. Tokens are known only once the answer is: a request is
admitted while its tokens bucket has room for one, and the answer's tokens are spent afterwards
(the bucket may go into debt, which later requests wait out). `ahead` is `tat - now`, the time
until the bucket is full again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from hanse.config.ratelimits import AccountLimits

PERIOD_S = 60.0
_PRUNE_ABOVE = 100_000


@dataclass(frozen=True, slots=True)
class Decision:
    """One request's verdict, and how far ahead each bucket is (in seconds) afterwards."""

    allowed: bool
    requests_ahead_s: float
    tokens_ahead_s: float
    retry_after_s: float


def _slack(interval: float) -> float:
    return min(interval / 2, 0.001)


def remaining(limit: int, ahead_s: float) -> int:
    """How many units the bucket still holds."""
    interval = PERIOD_S / limit
    return max(0, math.floor((PERIOD_S + _slack(interval) - max(ahead_s, 0.0)) / interval))


def decide(limits: AccountLimits, requests_tat: float, tokens_tat: float, now: float) -> Decision:
    """Whether a request may go now; `*_tat` are the stored values (0 when none)."""
    allowed, retry = True, 0.0
    requests_ahead = max(requests_tat, now) - now
    tokens_ahead = max(tokens_tat, now) - now
    for limit, ahead in (
        (limits.requests_per_minute, requests_ahead),
        (limits.tokens_per_minute, tokens_ahead),
    ):
        if not limit:
            continue
        interval = PERIOD_S / limit
        if ahead + interval > PERIOD_S + _slack(interval):
            allowed, retry = False, max(retry, ahead + interval - PERIOD_S)
    if allowed and limits.requests_per_minute:
        requests_ahead += PERIOD_S / limits.requests_per_minute
    return Decision(allowed, requests_ahead, tokens_ahead, retry)


class LocalBuckets:
    """Every account's buckets in this process (the default, and the fallback when Redis is down)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._requests: dict[int, float] = {}
        self._tokens: dict[int, float] = {}

    async def take(self, account_id: int, limits: AccountLimits) -> Decision:
        now = self._clock()
        decision = decide(
            limits, self._requests.get(account_id, 0.0), self._tokens.get(account_id, 0.0), now
        )
        if decision.allowed and limits.requests_per_minute:
            self._prune(self._requests, now)
            self._requests[account_id] = now + decision.requests_ahead_s
        return decision

    async def spend(self, account_id: int, limits: AccountLimits, tokens: int) -> None:
        now = self._clock()
        self._prune(self._tokens, now)
        tat = max(self._tokens.get(account_id, 0.0), now)
        self._tokens[account_id] = tat + tokens * PERIOD_S / limits.tokens_per_minute

    @staticmethod
    def _prune(tats: dict[int, float], now: float) -> None:
        # A bucket already full again holds nothing worth keeping.
        if len(tats) > _PRUNE_ABOVE:
            for account_id in [a for a, tat in tats.items() if tat <= now]:
                del tats[account_id]
