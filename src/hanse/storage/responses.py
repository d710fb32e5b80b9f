"""Stored responses (`/v1/responses` with `store: true`): written once, read and deleted by their
account only (another account's id is as unknown as one that never existed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select

from hanse.storage.database import Database
from hanse.storage.tables import responses


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    body: dict[str, Any]
    input_items: list[dict[str, Any]]
    conversation: list[dict[str, Any]]


class ResponseStore:
    def __init__(self, engine: Database) -> None:
        self._engine = engine

    async def put(self, account_id: int, stored: StoredResponse) -> None:
        values = {
            "id": stored.id,
            "account_id": account_id,
            "body": stored.body,
            "input_items": stored.input_items,
            "conversation": stored.conversation,
            "created_at": datetime.now(UTC),
        }
        async with self._engine.begin() as conn:
            await conn.execute(insert(responses).values(**values))

    async def get(self, account_id: int, response_id: str) -> StoredResponse | None:
        query = select(responses).where(
            responses.c.id == response_id, responses.c.account_id == account_id
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return StoredResponse(row.id, row.body, row.input_items, row.conversation)

    async def delete(self, account_id: int, response_id: str) -> bool:
        query = delete(responses).where(
            responses.c.id == response_id, responses.c.account_id == account_id
        )
        async with self._engine.begin() as conn:
            return bool((await conn.execute(query)).rowcount)
