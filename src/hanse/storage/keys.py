"""Accounts and API keys in the database."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, insert, select, update

from hanse.auth import Principal, generate_key, hash_key, key_hint
from hanse.storage.accounts import ensure_account
from hanse.storage.database import Database
from hanse.storage.tables import accounts, api_keys

_CACHE_LIMIT = 100_000
# Built once: every request whose key is not cached runs it (building it cost more than running it).
_LIVE_KEY = (
    select(
        api_keys.c.id,
        api_keys.c.account_id,
        api_keys.c.scopes,
        accounts.c.name,
        accounts.c.plan,
        accounts.c.requests_per_minute,
        accounts.c.tokens_per_minute,
    )
    .join(accounts, accounts.c.id == api_keys.c.account_id)
    .where(api_keys.c.key_hash == bindparam("digest"), api_keys.c.revoked_at.is_(None))
)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as listings show it: never the secret."""

    id: str
    account: str
    hint: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


class KeyStore:
    """Creates, finds, lists and revokes keys."""

    def __init__(self, engine: Database, prefix: str, cache_ttl_s: float = 0.0) -> None:
        self._engine = engine
        self._prefix = prefix
        # Live keys seen in the last `cache_ttl_s`: a revocation by another process is honoured
        # within that bound, one by this process at once. Unknown keys are never cached.
        self._cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def create(self, account: str, scopes: list[str]) -> tuple[str, str]:
        """A new key for `account` (created if missing): returns (key id, secret key)."""
        key = generate_key(self._prefix)
        key_id = "key_" + secrets.token_hex(8)
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            account_id = await ensure_account(conn, self._engine.url, account)
            await conn.execute(
                insert(api_keys).values(
                    id=key_id,
                    account_id=account_id,
                    key_hash=hash_key(key),
                    hint=key_hint(key, self._prefix),
                    scopes=list(scopes),
                    created_at=now,
                )
            )
        return key_id, key

    async def authenticate(self, key: str) -> Principal | None:
        """The principal for a live key, or None for an unknown or revoked one."""
        digest = hash_key(key)
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        principal = await self._lookup(digest)
        if principal is not None and self._cache_ttl_s > 0:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = (principal, time.monotonic() + self._cache_ttl_s)
        else:
            self._cache.pop(digest, None)
        return principal

    async def _lookup(self, digest: str) -> Principal | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(_LIVE_KEY, {"digest": digest})).first()
        if row is None:
            return None
        return Principal(
            key_id=row.id,
            account_id=row.account_id,
            account_name=row.name,
            scopes=tuple(row.scopes),
            plan=row.plan,
            requests_per_minute=row.requests_per_minute,
            tokens_per_minute=row.tokens_per_minute,
        )

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; False when no live key has that id."""
        statement = (
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(statement)
        self._cache = {h: e for h, e in self._cache.items() if e[0].key_id != key_id}
        return bool(result.rowcount)

    async def list(self) -> list[KeyRecord]:
        query = (
            select(api_keys, accounts.c.name.label("account"))
            .join(accounts, accounts.c.id == api_keys.c.account_id)
            .order_by(api_keys.c.created_at)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            KeyRecord(
                id=r.id,
                account=r.account,
                hint=r.hint,
                scopes=tuple(r.scopes),
                created_at=r.created_at,
                revoked_at=r.revoked_at,
            )
            for r in rows
        ]
