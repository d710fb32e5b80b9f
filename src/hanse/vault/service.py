"""The account's vault as the API sees it: unlock with the vault key, then read and write items.

The first write creates the vault with the key it carries. A key is checked against the vault's
verifier: missing is AUTH_1030 (401), wrong is AUTH_1031 (403), too many wrong ones AUTH_1032 (429,
throttle.py), an unknown id VALIDATION_4041 (404), an item that no longer opens (moved or altered
in the database) SYSTEM_9002. The KEK lives only as long as the `VaultSession` of one request.

Nothing here logs, and no error carries a key or an item's content: errors name ids and kinds.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
import orjson

from hanse.errors import (
    OUT_OF_RANGE,
    VAULT_ITEM_DAMAGED,
    VAULT_ITEM_NOT_FOUND,
    VAULT_KEY_INVALID,
    VAULT_KEY_MISSING,
    HanseError,
)
from hanse.storage.vault import ItemRecord, VaultRecord, VaultStore
from hanse.vault.sealing import MAX_KEY_LENGTH, MIN_KEY_LENGTH, KdfParams, SealBroken, Sealer
from hanse.vault.throttle import KeyThrottle

Kind = Literal["blueprint", "skill"]
VAULT_KEY_HEADER = "X-Vault-Key"


@dataclass(frozen=True, slots=True)
class StoredItem:
    """An opened item: its id, timestamps and the object as it was written."""

    id: str
    kind: Kind
    data: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class VaultSession:
    """One request's access to an unlocked vault (or to an account that has none yet)."""

    def __init__(
        self,
        store: VaultStore,
        account_id: int,
        record: VaultRecord | None,
        sealer: Sealer | None,
    ) -> None:
        self._store = store
        self._account_id = account_id
        self.record = record
        self.sealer = sealer

    async def get(self, kind: Kind, item_id: str) -> StoredItem:
        record = await self._store.item(self._account_id, kind, item_id) if self.sealer else None
        if record is None:
            raise not_found(kind, item_id)
        return self._open(record, kind)

    async def exists(self, kind: Kind, item_id: str) -> bool:
        if self.sealer is None:
            return False
        return await self._store.item(self._account_id, kind, item_id) is not None

    async def delete(self, kind: Kind, item_id: str) -> None:
        if self.sealer is None or not await self._store.delete(self._account_id, kind, item_id):
            raise not_found(kind, item_id)

    async def list(self, kind: Kind) -> list[StoredItem]:
        if self.sealer is None:
            return []
        return [self._open(r, kind) for r in await self._store.items(self._account_id, kind)]

    async def put(self, kind: Kind, data: dict[str, Any], item_id: str | None = None) -> StoredItem:
        """Seal and store `data`: a new item, or a replacement for `item_id`."""
        assert self.sealer is not None and self.record is not None, "writes create the vault"
        now = datetime.now(UTC)
        created = item_id is None
        item_id = item_id or str(uuid.uuid4())
        existing = None if created else await self._store.item(self._account_id, kind, item_id)
        if not created and existing is None:
            raise not_found(kind, item_id)
        sealed = self.sealer.seal(kind, item_id, orjson.dumps(data))
        record = ItemRecord(item_id, kind, sealed, existing.created_at if existing else now, now)
        stored = await self._store.put(
            self._account_id, self.record.generation, record, create=created
        )
        if stored is None:
            raise _rotated()
        if not stored:
            raise not_found(kind, item_id)
        return StoredItem(item_id, kind, data, record.created_at, now)

    def _open(self, record: ItemRecord, kind: Kind) -> StoredItem:
        assert self.sealer is not None
        try:
            data = orjson.loads(self.sealer.open(kind, record.id, record.sealed))
        except SealBroken as exc:
            raise HanseError(VAULT_ITEM_DAMAGED, details={"id": record.id, "kind": kind}) from exc
        return StoredItem(record.id, kind, data, record.created_at, record.updated_at)


class Vault:
    """Unlocks account vaults; new vaults and rotations use scrypt with cost `scrypt_n`; a client
    may get an account's key wrong `key_attempts` times before it must wait (throttle.py)."""

    def __init__(self, store: VaultStore, scrypt_n: int, key_attempts: int = 5) -> None:
        self._store = store
        self._scrypt_n = scrypt_n
        self._throttle = KeyThrottle(key_attempts)
        self._limiter: anyio.CapacityLimiter | None = None

    async def unlock(
        self,
        account_id: int,
        vault_key: str | None,
        *,
        create: bool = False,
        clients: Sequence[str] = (),
    ) -> VaultSession:
        """A session for the key, creating the account's vault with it when `create` and none
        exists. `clients` name the caller within the account (`address ...`, `key ...`): each
        has its own count of wrong keys."""
        key = _require_key(vault_key)
        record = await self._store.get(account_id)
        if record is None and create:
            _check_new_key(key, VAULT_KEY_HEADER)
            params = KdfParams.fresh(self._scrypt_n)
            sealer = await _derive(account_id, key, params)
            record = await self._store.create(
                account_id, params, sealer.verifier(), datetime.now(UTC)
            )
        if record is None:
            return VaultSession(self._store, account_id, None, None)
        sealer = await self._verified(account_id, key, record, clients)
        return VaultSession(self._store, account_id, record, sealer)

    async def _verified(
        self, account_id: int, key: str, record: VaultRecord, clients: Sequence[str]
    ) -> Sealer:
        """The sealer of a key that opens the vault; a wrong key counts against the throttle."""
        self._throttle.check(account_id, clients)
        # Derivations take turns, so a flood of guesses queues here instead of taking every core;
        # a try that queued is checked again, since the ones before it may have failed.
        async with self._derivations():
            self._throttle.check(account_id, clients)
            sealer = await _derive(account_id, key, record.params)
        if not sealer.verifies(record.verifier):
            self._throttle.failed(account_id, clients)
            raise HanseError(
                VAULT_KEY_INVALID, "The vault key is invalid for this account's vault."
            )
        self._throttle.succeeded(account_id, clients)
        return sealer

    def _derivations(self) -> anyio.CapacityLimiter:
        # Made on first use: a limiter belongs to the running event loop.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 2))
        return self._limiter

    async def list_records(self, account_id: int, kind: Kind) -> list[ItemRecord]:
        """Ids and timestamps, which need no key."""
        return await self._store.items(account_id, kind)

    async def rotate(
        self, account_id: int, old_key: str | None, new_key: str, clients: Sequence[str] = ()
    ) -> int:
        """Re-seal every item under `new_key` (fresh salt) in one transaction: how many items."""
        session = await self.unlock(account_id, old_key, clients=clients)
        record, old = session.record, session.sealer
        if record is None or old is None:
            raise HanseError(
                VAULT_ITEM_NOT_FOUND,
                "This account has no vault yet: the first blueprint or skill written creates it.",
            )
        _check_new_key(new_key, "new_key")
        params = KdfParams.fresh(self._scrypt_n)
        new = await _derive(account_id, new_key, params)

        def reseal(item: ItemRecord) -> bytes:
            try:
                plaintext = old.open(item.kind, item.id, item.sealed)
            except SealBroken as exc:
                raise HanseError(VAULT_ITEM_DAMAGED, details={"id": item.id}) from exc
            return new.seal(item.kind, item.id, plaintext)

        count = await self._store.rotate(
            account_id, record.generation, params, new.verifier(), reseal, datetime.now(UTC)
        )
        if count is None:
            raise _rotated()
        return count


async def _derive(account_id: int, key: str, params: KdfParams) -> Sealer:
    # scrypt is deliberately slow: keep it off the event loop (it releases the GIL).
    return await anyio.to_thread.run_sync(Sealer.derive, account_id, key, params)


def vault_clients(key_id: str, address: str | None) -> list[str]:
    """The names a caller's wrong keys are counted under: its API key, and its address if known."""
    key = f"key {key_id}"
    return [key, f"address {address}"] if address else [key]


def _require_key(vault_key: str | None) -> str:
    if not vault_key:
        raise HanseError(VAULT_KEY_MISSING, f"This needs the vault key: send `{VAULT_KEY_HEADER}`.")
    return vault_key


def _check_new_key(key: str, param: str) -> None:
    if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH:
        raise HanseError(
            OUT_OF_RANGE,
            f"A new vault key must have {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} characters.",
            param=param,
            details={
                "parameter": param,
                "constraint": {"min_length": MIN_KEY_LENGTH, "max_length": MAX_KEY_LENGTH},
            },
        )


def not_found(kind: Kind, item_id: str) -> HanseError:
    return HanseError(
        VAULT_ITEM_NOT_FOUND,
        f"No {kind} with id `{item_id}` in this account's vault.",
        details={"kind": kind, "id": item_id},
    )


def _rotated() -> HanseError:
    return HanseError(VAULT_KEY_INVALID, "The vault key was rotated while this request ran.")
