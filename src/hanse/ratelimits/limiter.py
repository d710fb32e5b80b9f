"""The rate-limit step of the spine, right after authentication.

Every request made with a key counts against its account's requests per minute; every answer's
tokens count against its tokens per minute once they are known. The buckets live in this process,
or in Redis when `HANSE_REDIS_URL` is set. When Redis does not answer, `HANSE_RATE_LIMIT_FALLBACK`
says what happens: `open` counts in this process instead (each process then allows the whole limit),
`closed` refuses the request with SYSTEM_9003.
"""

from __future__ import annotations

import math
from typing import Literal

from hanse.auth import Principal
from hanse.config.ratelimits import AccountLimits, RateLimitsConfig
from hanse.errors import RATE_LIMIT_UNAVAILABLE, RATE_LIMITED, HanseError
from hanse.ratelimits.buckets import Decision, LocalBuckets, remaining
from hanse.ratelimits.shared import SharedBuckets
from hanse.redislink import RedisLink, RedisUnavailable

Fallback = Literal["open", "closed"]


class RateLimiter:
    """Admits requests and counts tokens, per account."""

    def __init__(
        self, config: RateLimitsConfig, link: RedisLink | None, fallback: Fallback = "open"
    ) -> None:
        self._config = config
        self._local = LocalBuckets()
        self._shared = SharedBuckets(link) if link is not None else None
        self._fallback = fallback

    def limits(self, principal: Principal) -> AccountLimits:
        return self._config.for_account(
            principal.plan, principal.requests_per_minute, principal.tokens_per_minute
        )

    async def admit(self, principal: Principal) -> dict[str, str]:
        """Count one request: the `X-RateLimit-*` headers its answer carries, or AUTH_1028
        (429, with Retry-After) when the account is over a limit."""
        limits = self.limits(principal)
        if not limits.any:
            return {}
        if self._shared is None:
            decision = await self._local.take(principal.account_id, limits)
        else:
            try:
                decision = await self._shared.take(principal.account_id, limits)
            except RedisUnavailable:
                if self._fallback == "closed":
                    raise HanseError(RATE_LIMIT_UNAVAILABLE, headers={"Retry-After": "1"}) from None
                decision = await self._local.take(principal.account_id, limits)
        headers = _headers(limits, decision)
        if not decision.allowed:
            raise _refusal(limits, decision, headers)
        return headers

    async def spend(self, principal: Principal, tokens: int) -> None:
        """Count an answer's tokens against the account's tokens per minute; never raises."""
        limits = self.limits(principal)
        if not limits.tokens_per_minute or tokens <= 0:
            return
        if self._shared is not None:
            try:
                await self._shared.spend(principal.account_id, limits, tokens)
                return
            except RedisUnavailable:
                pass  # counted here: the process's own limit still holds while Redis is away
        await self._local.spend(principal.account_id, limits, tokens)


def _headers(limits: AccountLimits, decision: Decision) -> dict[str, str]:
    headers: dict[str, str] = {}
    if limits.requests_per_minute:
        headers.update(_family("Requests", limits.requests_per_minute, decision.requests_ahead_s))
    if limits.tokens_per_minute:
        headers.update(_family("Tokens", limits.tokens_per_minute, decision.tokens_ahead_s))
    return headers


def _family(kind: str, limit: int, ahead_s: float) -> dict[str, str]:
    return {
        f"X-RateLimit-Limit-{kind}": str(limit),
        f"X-RateLimit-Remaining-{kind}": str(remaining(limit, ahead_s)),
        # Seconds until the bucket is full again.
        f"X-RateLimit-Reset-{kind}": str(math.ceil(max(ahead_s, 0.0))),
    }


def _refusal(limits: AccountLimits, decision: Decision, headers: dict[str, str]) -> HanseError:
    retry_s = max(decision.retry_after_s, 0.001)
    details = {
        "requests_per_minute": limits.requests_per_minute,
        "tokens_per_minute": limits.tokens_per_minute,
        "retry_after_s": round(retry_s, 3),
    }
    return HanseError(
        RATE_LIMITED,
        f"Rate limit reached for this account: retry in {math.ceil(retry_s)} s.",
        details=details,
        # Retry-After in whole seconds (HTTP), and to the millisecond for the OpenAI SDKs.
        headers={
            **headers,
            "Retry-After": str(math.ceil(retry_s)),
            "retry-after-ms": str(math.ceil(retry_s * 1000)),
        },
    )
