"""Accounts: plan and the two balances (energy from the plan, credits from top-ups)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Insert, Row, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from hanse.storage.database import Connection, Database
from hanse.storage.tables import accounts

Plan = Literal["energy_then_credits", "energy_only", "credits_only"]
PLANS: tuple[Plan, ...] = ("energy_then_credits", "energy_only", "credits_only")
DEFAULT_PLAN: Plan = "energy_then_credits"
# Printable: no control characters (C0, DEL, C1), line or paragraph separators or bidirectional
# overrides, which would forge log lines or disguise one name as another; no space at either end.
_UNPRINTABLE = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
ACCOUNT_NAME_PATTERN = rf"^[^{_UNPRINTABLE}\s](?:[^{_UNPRINTABLE}]*[^{_UNPRINTABLE}\s])?$"
LimitName = Literal["requests_per_minute", "tokens_per_minute"]
LIMITS: tuple[LimitName, ...] = ("requests_per_minute", "tokens_per_minute")


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    plan: Plan
    energy_pico: int
    credits_pico: int
    created_at: datetime
    # Its own rate limits; None: its plan's.
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


class AccountStore:
    """Creates accounts, tops them up, reads them."""

    def __init__(self, engine: Database) -> None:
        self._engine = engine

    async def create(self, name: str, plan: Plan = DEFAULT_PLAN) -> tuple[Account, bool]:
        """The account `name`, created with `plan` if missing; the flag says whether it was new.

        Concurrent creations of one name all succeed: one inserts, the others find it."""
        async with self._engine.begin() as conn:
            inserted = await conn.execute(_insert_missing(self._engine.url, name, plan))
            created = await _by_name(conn, name)
        assert created is not None
        return created, bool(inserted.rowcount)

    async def get(self, name: str) -> Account | None:
        async with self._engine.connect() as conn:
            return await _by_name(conn, name)

    async def get_by_id(self, account_id: int) -> Account | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
        return _account(row) if row is not None else None

    async def top_up(self, name: str, energy_pico: int, credits_pico: int) -> Account | None:
        """Add to the balances in one atomic update; None when there is no such account."""
        statement = (
            update(accounts)
            .where(accounts.c.name == name)
            .values(
                energy_pico=accounts.c.energy_pico + energy_pico,
                credits_pico=accounts.c.credits_pico + credits_pico,
            )
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(statement)
            if not result.rowcount:
                return None
            return await _by_name(conn, name)

    async def set_limits(self, name: str, limits: Mapping[LimitName, int | None]) -> Account | None:
        """Set the account's own `requests_per_minute` / `tokens_per_minute` (None: the plan's)."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(accounts).where(accounts.c.name == name).values(limits)
            )
            return await _by_name(conn, name) if result.rowcount else None

    async def set_plan(self, name: str, plan: Plan) -> Account | None:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(accounts).where(accounts.c.name == name).values(plan=plan)
            )
            return await _by_name(conn, name) if result.rowcount else None


async def ensure_account(conn: Connection, database_url: str, name: str) -> int:
    """The id of account `name`, created with the default plan if missing (for `keys create`)."""
    await conn.execute(_insert_missing(database_url, name, DEFAULT_PLAN))
    found = await _by_name(conn, name)
    assert found is not None
    return found.id


def _insert_missing(database_url: str, name: str, plan: Plan) -> Insert:
    """INSERT ... ON CONFLICT (name) DO NOTHING: a race between two creations is no error."""
    insert = sqlite_insert if database_url.startswith("sqlite") else postgresql_insert
    return (
        insert(accounts)
        .values(name=name, plan=plan, created_at=_now())
        .on_conflict_do_nothing(index_elements=[accounts.c.name])
    )


async def _by_name(conn: Connection, name: str) -> Account | None:
    row = (await conn.execute(select(accounts).where(accounts.c.name == name))).first()
    return _account(row) if row is not None else None


def _account(row: Row[Any]) -> Account:
    return Account(
        id=row.id,
        name=row.name,
        plan=row.plan,
        energy_pico=int(row.energy_pico),
        credits_pico=int(row.credits_pico),
        created_at=row.created_at,
        requests_per_minute=row.requests_per_minute,
        tokens_per_minute=row.tokens_per_minute,
    )


def _now() -> datetime:
    return datetime.now(UTC)
