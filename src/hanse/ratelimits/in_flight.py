"""How many requests of one account this process works on at once (`[rate_limits] max_in_flight`).

Per-minute limits bound a rate, not a pile-up: slow streams or long generations opened faster than
they end would hold every connection and provider slot. Counted per process (a worker that refuses
knows only its own work); a request counts from admission until its answer, or its stream, ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from hanse.errors import RATE_LIMITED, HanseError

T = TypeVar("T")


class InFlight:
    """Counts the requests in progress per account; refuses past `limit` (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._counts: dict[int, int] = {}

    def enter(self, account_id: int) -> None:
        """Count one more request of the account, or AUTH_1028 when it has `limit` already."""
        count = self._counts.get(account_id, 0)
        if self._limit and count >= self._limit:
            raise HanseError(
                RATE_LIMITED,
                f"The account has {count} requests in progress, the most this gateway works on "
                "at once for one account; retry when one has finished.",
                details={"limit": "max_in_flight", "maximum": self._limit},
                headers={"Retry-After": "1"},
            )
        self._counts[account_id] = count + 1

    def leave(self, account_id: int) -> None:
        count = self._counts.get(account_id, 0) - 1
        if count > 0:
            self._counts[account_id] = count
        else:
            self._counts.pop(account_id, None)

    def held(self, account_id: int, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """`stream`, with the account's request counted until it ends (or its client leaves)."""
        return _Held(self, account_id, stream)


class _Held(Generic[T]):
    """A stream that leaves its count once: at its end, its error, `aclose`, or when dropped
    unstarted (a generator's `finally` would not run then)."""

    def __init__(self, in_flight: InFlight, account_id: int, stream: AsyncIterator[T]) -> None:
        self._in_flight: InFlight | None = in_flight
        self._account_id = account_id
        self._stream = stream

    def __aiter__(self) -> _Held[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self._stream.__anext__()
        except BaseException:
            self._leave()
            raise

    async def aclose(self) -> None:
        self._leave()
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()

    def __del__(self) -> None:
        self._leave()

    def _leave(self) -> None:
        if self._in_flight is not None:
            self._in_flight.leave(self._account_id)
            self._in_flight = None
