"""Wrong vault keys, throttled: each scope that failed too often must wait before its next try.

    scopes      the account; and within it each client: its address (where the endpoint knows
                it) and its API key
    limit       `attempts` failures per client, 4 x `attempts` per account, before any wait
    wait        1 s after the failure that reaches the limit, doubling with each further one, at
                most 15 minutes; measured from the last failure
    refused     while a scope waits, a try is AUTH_1032 (429, Retry-After) before any derivation:
                a refused try costs the gateway nothing and tells the client nothing
    forgotten   a scope's failures, 24 hours after the last; a client's, on its first success

The account's count is never cleared by a success, so a correct key used elsewhere in the account
does not reset a guesser's progress; the price is that a guesser holding one of the account's API
keys can make the whole account wait. State is per process: with several processes each counts on
its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hanse.errors import VAULT_KEY_THROTTLED, HanseError

MAX_WAIT_S = 900.0
FORGET_S = 86_400.0
ACCOUNT_FACTOR = 4
_MAX_RECORDS = 100_000  # beyond, the scopes that failed longest ago are forgotten first


@dataclass(slots=True)
class _Record:
    failures: int = 0
    last: float = 0.0


class KeyThrottle:
    """Counts failed vault-key tries per scope; `check` refuses a scope that must still wait."""

    def __init__(self, attempts: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._attempts = attempts
        self._clock = clock
        self._records: dict[str, _Record] = {}

    def check(self, account_id: int, clients: Sequence[str]) -> None:
        """AUTH_1032 with Retry-After when the account or one of its clients must wait."""
        now = self._clock()
        waits = [
            self._remaining(scope, limit, now) for scope, limit in self._scopes(account_id, clients)
        ]
        wait = max(waits, default=0.0)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise HanseError(
                VAULT_KEY_THROTTLED,
                f"Too many wrong vault keys: retry in {seconds} s.",
                details={"retry_after_s": seconds},
                headers={"Retry-After": str(seconds)},
            )

    def failed(self, account_id: int, clients: Sequence[str]) -> None:
        now = self._clock()
        for scope, _ in self._scopes(account_id, clients):
            record = self._records.pop(scope, None) or _Record()
            record.failures, record.last = record.failures + 1, now
            self._records[scope] = record  # re-inserted: the dict stays ordered by last failure
        while len(self._records) > _MAX_RECORDS:
            del self._records[next(iter(self._records))]

    def succeeded(self, account_id: int, clients: Sequence[str]) -> None:
        for scope, _ in self._scopes(account_id, clients)[1:]:
            self._records.pop(scope, None)

    def _scopes(self, account_id: int, clients: Sequence[str]) -> list[tuple[str, int]]:
        """(scope, failures allowed before a wait), the account first."""
        account = (f"account {account_id}", self._attempts * ACCOUNT_FACTOR)
        return [account] + [
            (f"account {account_id} {client}", self._attempts) for client in clients
        ]

    def _remaining(self, scope: str, limit: int, now: float) -> float:
        record = self._records.get(scope)
        if record is None:
            return 0.0
        if now - record.last > FORGET_S:
            del self._records[scope]
            return 0.0
        if record.failures < limit:
            return 0.0
        # The exponent is bounded too: a guesser who keeps trying every 15 minutes must not
        # grow it past what a float holds.
        wait = min(2.0 ** min(record.failures - limit, 32), MAX_WAIT_S)
        return record.last + wait - now
