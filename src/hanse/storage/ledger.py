"""Reservations and the ledger: every balance change is one atomic conditional UPDATE.

reserve: debit the worst case from one balance (`WHERE balance >= amount`) and record the hold.
settle:  delete the hold, refund what was not spent, write the ledger row: one transaction, once.
sweep:   release holds past their expiry (a crashed process, a lost settlement) with a ledger row.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Row, delete, func, insert, select, update

from hanse.storage.database import Connection, Database
from hanse.storage.tables import accounts, ledger, reservations

Balance = Literal["energy", "credits"]
_COLUMNS = {"energy": accounts.c.energy_pico, "credits": accounts.c.credits_pico}


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
    cost_pico: int = 0
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
        async with self._engine.begin() as conn:
            for balance in balances:
                column = _COLUMNS[balance]
                debit = (
                    update(accounts)
                    .where(accounts.c.id == account_id, column >= amount_pico)
                    .values({column: column - amount_pico})
                )
                if (await conn.execute(debit)).rowcount:
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
                    await conn.execute(
                        insert(reservations).values(
                            id=reservation.id,
                            account_id=account_id,
                            balance=balance,
                            amount_pico=amount_pico,
                            request_id=request_id,
                            key_id=key_id,
                            model=model,
                            created_at=now,
                            expires_at=expires_at,
                        )
                    )
                    return reservation
        return None

    async def settle(self, reservation: Reservation, entry: LedgerEntry, now: datetime) -> int:
        """Charge at most the reserved amount, refund the rest, write the ledger row; returns the charge."""
        charge = min(entry.cost_pico, reservation.amount_pico)
        column = _COLUMNS[reservation.balance]
        status = entry.status
        async with self._engine.begin() as conn:
            held = await conn.execute(
                delete(reservations).where(reservations.c.id == reservation.id)
            )
            if held.rowcount:
                refund = reservation.amount_pico - charge
                if refund:
                    await _credit(conn, reservation.account_id, reservation.balance, refund)
            elif charge == 0:
                return 0  # already released by the sweeper, which wrote the row
            else:
                # Released by the sweeper before the answer was settled: charge afresh if possible.
                debit = (
                    update(accounts)
                    .where(accounts.c.id == reservation.account_id, column >= charge)
                    .values({column: column - charge})
                )
                if not (await conn.execute(debit)).rowcount:
                    charge, status = 0, "unpaid"
            await conn.execute(
                insert(ledger).values(
                    request_id=reservation.request_id,
                    account_id=reservation.account_id,
                    key_id=reservation.key_id,
                    model=reservation.model,
                    route=entry.route,
                    status=status,
                    prompt_tokens=entry.prompt_tokens,
                    completion_tokens=entry.completion_tokens,
                    cost_pico=charge,
                    paid_with=reservation.balance,
                    energy_kwh=entry.energy_kwh,
                    carbon_g_co2=entry.carbon_g_co2,
                    water_liters=entry.water_liters,
                    started_at=reservation.created_at,
                    finished_at=now,
                )
            )
        return charge

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
            )
            for r in rows
        ]


async def _credit(conn: Connection, account_id: int, balance: Balance, amount: int) -> None:
    column = _COLUMNS[balance]
    await conn.execute(
        update(accounts).where(accounts.c.id == account_id).values({column: column + amount})
    )


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
