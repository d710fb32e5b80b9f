"""Reservations and the ledger: every balance change is one atomic conditional UPDATE.

reserve: debit the worst case from one balance (`WHERE balance >= amount`) and record the hold.
settle:  delete the hold, refund what was not spent (or debit what the cost exceeds it by, as far
         as the balance goes: a balance never goes below zero), write the ledger row with what
         could not be paid: one transaction, once.
renew:   push the expiry of a process's live holds (its sweeper does, so they never expire).
sweep:   release holds past their expiry (a crashed process, a lost settlement) with a ledger row.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, Row, bindparam, delete, func, insert, select, update

from hanse.storage.database import Database
from hanse.storage.driver import DriverStatement
from hanse.storage.tables import accounts, ledger, reservations

Balance = Literal["energy", "credits"]
_COLUMNS = {"energy": accounts.c.energy_pico, "credits": accounts.c.credits_pico}
# Built once: the hot path only binds values (building statements per request costs more than running them).
# The hot path's statements run on the driver's cursor (storage/driver.py).
_DEBIT = {
    balance: DriverStatement(
        update(accounts)
        .where(accounts.c.id == bindparam("account_id"), column >= bindparam("amount"))
        .values({column: column - bindparam("amount")})
    )
    for balance, column in _COLUMNS.items()
}
_CREDIT = {
    balance: DriverStatement(
        update(accounts)
        .where(accounts.c.id == bindparam("account_id"))
        .values({column: column + bindparam("amount")})
    )
    for balance, column in _COLUMNS.items()
}
# Locks the account's row until the debit that follows (PostgreSQL's FOR NO KEY UPDATE, which lets
# other requests' holds and rows reference the account meanwhile); SQLite has one writer anyway.
_AVAILABLE = {
    balance: DriverStatement(
        select(column)
        .where(accounts.c.id == bindparam("account_id"))
        .with_for_update(key_share=True)
    )
    for balance, column in _COLUMNS.items()
}
_MAX_PICO = 2**63 - 1  # a BigInteger
_HOLD = DriverStatement(insert(reservations), insert=True)
_RELEASE = DriverStatement(delete(reservations).where(reservations.c.id == bindparam("id")))
_RECORD = DriverStatement(insert(ledger), insert=True)
_RENEW = (
    update(reservations)
    .where(reservations.c.id == bindparam("hold"))
    .values(expires_at=bindparam("renewed_to"))
)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money held from one balance for one request in flight."""

    id: str
    account_id: int
    balance: Balance
    amount_pico: int
    request_id: str
    key_id: str | None
    model: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What a finished request cost and consumed."""

    status: str
    route: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    usage_source: str = "reported"  # or "counted", "estimated"
    cost_pico: int = 0  # the exact cost; the row records what was paid of it
    energy_kwh: float = 0.0
    carbon_g_co2: float = 0.0
    water_liters: float = 0.0


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Ledger totals of one model and one balance."""

    model: str
    paid_with: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_pico: int
    energy_kwh: float
    carbon_g_co2: float
    water_liters: float
    unpaid_pico: int = 0  # what the balance could not cover (billing.md)


class LedgerStore:
    def __init__(self, engine: Database) -> None:
        self._engine = engine

    async def reserve(
        self,
        *,
        account_id: int,
        balances: tuple[Balance, ...],
        amount_pico: int,
        request_id: str,
        key_id: str | None,
        model: str,
        now: datetime,
        expires_at: datetime,
    ) -> Reservation | None:
        """Hold `amount_pico` from the first of `balances` that covers it; None if none does."""

        def unit(conn: Connection) -> Reservation | None:
            for balance in balances:
                debit = {"account_id": account_id, "amount": amount_pico}
                if _DEBIT[balance].rowcount(conn, debit):
                    reservation = Reservation(
                        id="rsv_" + secrets.token_hex(16),
                        account_id=account_id,
                        balance=balance,
                        amount_pico=amount_pico,
                        request_id=request_id,
                        key_id=key_id,
                        model=model,
                        created_at=now,
                    )
                    _HOLD.rowcount(conn, {**_columns(reservation), "expires_at": expires_at})
                    return reservation
            return None

        return await self._engine.transact(unit, key=account_id)

    async def settle(self, reservation: Reservation, entry: LedgerEntry, now: datetime) -> int:
        """Charge the entry's exact cost: refund what the hold did not need, or take what it
        lacked from the same balance, as far as it goes; what the balance could not cover is the
        row's `unpaid_pico` (status `unpaid`). Writes the ledger row; returns the charge."""

        def unit(conn: Connection) -> int:
            cost = entry.cost_pico
            held = reservation.amount_pico
            account = {"account_id": reservation.account_id}
            if _RELEASE.rowcount(conn, {"id": reservation.id}):
                charge = min(cost, held) + _take(conn, reservation, cost - held)
                if held > cost:
                    _CREDIT[reservation.balance].rowcount(conn, {**account, "amount": held - cost})
            elif cost == 0:
                return 0  # already released by the sweeper, which wrote the row
            else:
                # Released by the sweeper before the answer was settled: charge afresh.
                charge = _take(conn, reservation, cost)
            unpaid = cost - charge
            record = {
                **_columns(entry),
                "status": "unpaid" if unpaid else entry.status,
                "cost_pico": charge,
                "unpaid_pico": min(unpaid, _MAX_PICO),
                "request_id": reservation.request_id,
                "account_id": reservation.account_id,
                "key_id": reservation.key_id,
                "model": reservation.model,
                "paid_with": reservation.balance,
                "started_at": reservation.created_at,
                "finished_at": now,
            }
            _RECORD.rowcount(conn, record)
            return charge

        return await self._engine.transact(unit, key=reservation.account_id)

    async def renew(self, ids: tuple[str, ...], expires_at: datetime) -> None:
        """Push the expiry of live holds (those already settled are gone: nothing to renew)."""

        def unit(conn: Connection) -> None:
            conn.execute(_RENEW, [{"hold": hold, "renewed_to": expires_at} for hold in ids])

        await self._engine.transact(unit)

    async def expired(self, now: datetime) -> list[Reservation]:
        """Holds whose expiry has passed."""
        query = select(reservations).where(reservations.c.expires_at < now)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_reservation(row) for row in rows]

    async def usage(
        self, account_id: int, start: datetime, end: datetime, model: str | None
    ) -> list[UsageRow]:
        """Totals per model and balance of the ledger rows finished in [start, end)."""
        conditions = [
            ledger.c.account_id == account_id,
            ledger.c.finished_at >= start,
            ledger.c.finished_at < end,
        ]
        if model is not None:
            conditions.append(ledger.c.model == model)
        query = (
            select(
                ledger.c.model,
                ledger.c.paid_with,
                func.count().label("requests"),
                func.sum(ledger.c.prompt_tokens).label("prompt_tokens"),
                func.sum(ledger.c.completion_tokens).label("completion_tokens"),
                func.sum(ledger.c.cost_pico).label("cost_pico"),
                func.sum(ledger.c.unpaid_pico).label("unpaid_pico"),
                func.sum(ledger.c.energy_kwh).label("energy_kwh"),
                func.sum(ledger.c.carbon_g_co2).label("carbon_g_co2"),
                func.sum(ledger.c.water_liters).label("water_liters"),
            )
            .where(*conditions)
            .group_by(ledger.c.model, ledger.c.paid_with)
            .order_by(ledger.c.model)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            UsageRow(
                model=r.model,
                paid_with=r.paid_with,
                requests=int(r.requests),
                prompt_tokens=int(r.prompt_tokens or 0),
                completion_tokens=int(r.completion_tokens or 0),
                cost_pico=int(r.cost_pico or 0),
                energy_kwh=float(r.energy_kwh or 0),
                carbon_g_co2=float(r.carbon_g_co2 or 0),
                water_liters=float(r.water_liters or 0),
                unpaid_pico=int(r.unpaid_pico or 0),
            )
            for r in rows
        ]


def _take(conn: Connection, reservation: Reservation, amount: int) -> int:
    """Debit up to `amount` from the reservation's balance, never below zero; returns the debit."""
    if amount <= 0:
        return 0
    account = {"account_id": reservation.account_id}
    available = int(_AVAILABLE[reservation.balance].scalar(conn, account))
    taken = min(available, amount)
    if taken <= 0:
        return 0
    debited = _DEBIT[reservation.balance].rowcount(conn, {**account, "amount": taken})
    return taken if debited else 0


def _columns(record: Reservation | LedgerEntry) -> dict[str, Any]:
    """A record's fields as statement parameters (`dataclasses.asdict` deep-copies every value)."""
    return {field.name: getattr(record, field.name) for field in fields(record)}


def _reservation(row: Row[Any]) -> Reservation:
    return Reservation(
        id=row.id,
        account_id=row.account_id,
        balance=row.balance,
        amount_pico=int(row.amount_pico),
        request_id=row.request_id,
        key_id=row.key_id,
        model=row.model,
        created_at=row.created_at,
    )
