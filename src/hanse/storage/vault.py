"""The vault's rows: one per account (KDF parameters, verifier) and one per sealed item.

Nothing here sees a vault key or a plaintext: only salts, parameters and sealed blobs. Writes
check the vault's `generation` under a row lock, so an item sealed with a key that a concurrent
rotation has just replaced is never stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from hanse.storage.database import Connection, Database
from hanse.storage.tables import vault_items, vaults
from hanse.vault.sealing import KdfParams


@dataclass(frozen=True, slots=True)
class VaultRecord:
    account_id: int
    params: KdfParams
    verifier: bytes
    generation: int


@dataclass(frozen=True, slots=True)
class ItemRecord:
    id: str
    kind: str
    sealed: bytes
    created_at: datetime
    updated_at: datetime


class VaultStore:
    def __init__(self, engine: Database) -> None:
        self._engine = engine

    async def get(self, account_id: int) -> VaultRecord | None:
        async with self._engine.connect() as conn:
            return await _vault(conn, account_id)

    async def create(
        self, account_id: int, params: KdfParams, verifier: bytes, now: datetime
    ) -> VaultRecord:
        """The account's vault, created with these parameters unless a concurrent call won."""
        values = {
            "account_id": account_id,
            "kdf": "scrypt",
            "kdf_n": params.n,
            "kdf_r": params.r,
            "kdf_p": params.p,
            "salt": params.salt,
            "verifier": verifier,
            "generation": 1,
            "created_at": now,
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(vaults).values(**values))
        except IntegrityError:
            pass
        found = await self.get(account_id)
        assert found is not None
        return found

    async def items(self, account_id: int, kind: str) -> list[ItemRecord]:
        query = (
            select(vault_items)
            .where(vault_items.c.account_id == account_id, vault_items.c.kind == kind)
            .order_by(vault_items.c.created_at, vault_items.c.id)
        )
        async with self._engine.connect() as conn:
            return [_item(row) for row in (await conn.execute(query)).all()]

    async def item(self, account_id: int, kind: str, item_id: str) -> ItemRecord | None:
        query = select(vault_items).where(
            vault_items.c.account_id == account_id,
            vault_items.c.kind == kind,
            vault_items.c.id == item_id,
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _item(row) if row is not None else None

    async def put(
        self, account_id: int, generation: int, item: ItemRecord, *, create: bool
    ) -> bool | None:
        """Insert or replace an item; None when the vault was rotated meanwhile, False when the
        item to replace does not exist."""
        async with self._engine.begin() as conn:
            if await _locked_generation(conn, account_id) != generation:
                return None
            if create:
                await conn.execute(
                    insert(vault_items).values(
                        id=item.id,
                        account_id=account_id,
                        kind=item.kind,
                        sealed=item.sealed,
                        created_at=item.created_at,
                        updated_at=item.updated_at,
                    )
                )
                return True
            result = await conn.execute(
                update(vault_items)
                .where(
                    vault_items.c.account_id == account_id,
                    vault_items.c.kind == item.kind,
                    vault_items.c.id == item.id,
                )
                .values(sealed=item.sealed, updated_at=item.updated_at)
            )
            return bool(result.rowcount)

    async def delete(self, account_id: int, kind: str, item_id: str) -> bool:
        statement = delete(vault_items).where(
            vault_items.c.account_id == account_id,
            vault_items.c.kind == kind,
            vault_items.c.id == item_id,
        )
        async with self._engine.begin() as conn:
            return bool((await conn.execute(statement)).rowcount)

    async def rotate(
        self,
        account_id: int,
        generation: int,
        params: KdfParams,
        verifier: bytes,
        reseal: Callable[[ItemRecord], bytes],
        now: datetime,
    ) -> int | None:
        """Re-seal every item and record the new parameters in one transaction: the number of
        items, or None when another rotation came first."""
        async with self._engine.begin() as conn:
            if await _locked_generation(conn, account_id) != generation:
                return None
            rows = (
                await conn.execute(
                    select(vault_items).where(vault_items.c.account_id == account_id)
                )
            ).all()
            for record in map(_item, rows):
                await conn.execute(
                    update(vault_items)
                    .where(vault_items.c.id == record.id)
                    .values(sealed=reseal(record))
                )
            await conn.execute(
                update(vaults)
                .where(vaults.c.account_id == account_id)
                .values(
                    kdf_n=params.n,
                    kdf_r=params.r,
                    kdf_p=params.p,
                    salt=params.salt,
                    verifier=verifier,
                    generation=generation + 1,
                    rotated_at=now,
                )
            )
            return len(rows)


async def _locked_generation(conn: Connection, account_id: int) -> int | None:
    query = select(vaults.c.generation).where(vaults.c.account_id == account_id).with_for_update()
    value = (await conn.execute(query)).scalar_one_or_none()
    return None if value is None else int(value)


async def _vault(conn: Connection, account_id: int) -> VaultRecord | None:
    row = (await conn.execute(select(vaults).where(vaults.c.account_id == account_id))).first()
    if row is None:
        return None
    params = KdfParams(n=row.kdf_n, r=row.kdf_r, p=row.kdf_p, salt=bytes(row.salt))
    return VaultRecord(row.account_id, params, bytes(row.verifier), int(row.generation))


def _item(row: Row[Any]) -> ItemRecord:
    return ItemRecord(
        id=row.id,
        kind=row.kind,
        sealed=bytes(row.sealed),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
