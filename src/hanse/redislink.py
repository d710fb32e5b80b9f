"""The link to Redis, where several gateway processes share rate-limit counters and route health.

Every shared operation is one Lua script (atomic on the server, one round trip). When Redis does not
answer within `timeout_s`, the caller gets `RedisUnavailable` and falls back to its per-process
state; the link then skips Redis for `RETRY_S` rather than make every request wait for a timeout,
and logs the outage once, and the recovery once. The URL (it may hold a password) is never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a link is made: a gateway without Redis loads none of it
    from redis.commands.core import AsyncScript

log = logging.getLogger("hanse.redis")

# After a failure, how long calls go straight to the fallback before Redis is tried again.
RETRY_S = 1.0


class RedisUnavailable(Exception):
    """Redis did not answer: use the per-process fallback."""


class RedisLink:
    """One connection pool, the key prefix, and the outage bookkeeping."""

    def __init__(self, url: str, prefix: str, timeout_s: float, fallback_note: str) -> None:
        from redis.asyncio import Redis
        from redis.exceptions import RedisError

        self.prefix = prefix
        self._errors = (RedisError, OSError)
        self._client = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
        )
        self._fallback_note = fallback_note
        self._retry_at = 0.0
        self._down = False

    def script(self, lua: str) -> AsyncScript:
        return self._client.register_script(lua)

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The script's result; RedisUnavailable when Redis fails or was failing a moment ago."""
        if self._down and time.monotonic() < self._retry_at:
            raise RedisUnavailable
        try:
            result = await script(keys=list(keys), args=list(args))
        except self._errors as exc:
            self._failed(exc)
            raise RedisUnavailable from exc
        if self._down:
            self._down = False
            log.warning("redis reachable again: shared rate limits and route health resume")
        return result

    async def ping(self) -> bool:
        """Whether Redis answers now (for `/ready`)."""
        try:
            return bool(await self._client.ping())
        except self._errors:
            return False

    async def close(self) -> None:
        await self._client.aclose()

    def _failed(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + RETRY_S
        if not self._down:
            self._down = True
            log.warning(
                "redis unreachable: %s",
                self._fallback_note,
                extra={"error": type(exc).__name__},
            )
