"""Billing: reserve the worst case before a provider is called, settle the real cost after.

A request is paid from one balance: the plan says which ones may pay and in what order. The hold
moves with the request across failover (it covers the dearest candidate route); a request that
failed everywhere costs nothing; a stream cut midway costs what was delivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hanse.auth import Principal
from hanse.config.schema import RouteConfig
from hanse.domain import Usage
from hanse.errors import OUT_OF_CREDITS, OUT_OF_ENERGY, HanseError
from hanse.impact import Impact
from hanse.money import format_eur, price_per_token_pico
from hanse.storage.accounts import AccountStore
from hanse.storage.ledger import Balance, LedgerEntry, LedgerStore, Reservation

log = logging.getLogger("hanse.billing")

PLAN_BALANCES: dict[str, tuple[Balance, ...]] = {
    "energy_then_credits": ("energy", "credits"),
    "energy_only": ("energy",),
    "credits_only": ("credits",),
}


def route_cost_pico(route: RouteConfig, prompt_tokens: int, completion_tokens: int) -> int:
    """Input tokens x input price + output tokens x output price, in pico-euros."""
    return prompt_tokens * price_per_token_pico(
        route.input_eur_per_million
    ) + completion_tokens * price_per_token_pico(route.output_eur_per_million)


def worst_case_pico(routes: Sequence[RouteConfig], input_tokens: int, output_tokens: int) -> int:
    """The most any candidate route could charge for this request."""
    return max(route_cost_pico(route, input_tokens, output_tokens) for route in routes)


@dataclass(frozen=True, slots=True)
class Charge:
    """`billing_cost`, as the response carries it."""

    amount_pico: int
    paid_with: Balance

    def body(self) -> dict[str, Any]:
        amount = format_eur(self.amount_pico)
        return {
            "energy": amount if self.paid_with == "energy" else "0.0",
            "credits": amount if self.paid_with == "credits" else "0.0",
            "paid_with": self.paid_with,
        }


class Billing:
    """Reservations, settlement and the sweeper that releases abandoned holds."""

    def __init__(
        self, ledger: LedgerStore, accounts: AccountStore, reservation_ttl_s: float
    ) -> None:
        self._ledger = ledger
        self._accounts = accounts
        self._ttl = timedelta(seconds=reservation_ttl_s)
        self._holding: set[str] = set()  # this process's holds not settled yet
        self._none_held = asyncio.Event()
        self._none_held.set()

    async def reserve(
        self, principal: Principal, amount_pico: int, request_id: str, model: str
    ) -> Reservation:
        """Hold `amount_pico` with one atomic conditional update, or BILLING_2001/2003."""
        balances = PLAN_BALANCES[principal.plan]
        now = datetime.now(UTC)
        reservation = await self._ledger.reserve(
            account_id=principal.account_id,
            balances=balances,
            amount_pico=amount_pico,
            request_id=request_id,
            key_id=principal.key_id,
            model=model,
            now=now,
            expires_at=now + self._ttl,
        )
        if reservation is None:
            raise await self._insufficient(principal, balances, amount_pico)
        self._holding.add(reservation.id)
        self._none_held.clear()
        return reservation

    async def settle(
        self,
        reservation: Reservation,
        *,
        status: str,
        route: RouteConfig | None,
        usage: Usage,
        impact: Impact | None,
    ) -> Charge:
        """Charge the real cost (never more than held), refund the rest, write the ledger row."""
        cost = route_cost_pico(route, usage.prompt_tokens, usage.completion_tokens) if route else 0
        entry = LedgerEntry(
            status=status,
            route=route.id if route else None,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_pico=cost,
            energy_kwh=impact.energy_kwh if impact else 0.0,
            carbon_g_co2=impact.carbon_g_co2 if impact else 0.0,
            water_liters=impact.water_liters if impact else 0.0,
        )
        if cost > reservation.amount_pico:
            log.warning(
                "cost above the reservation; charging the reservation",
                extra={"cost_pico": cost, "reserved_pico": reservation.amount_pico},
            )
        try:
            charged = await self._ledger.settle(reservation, entry, datetime.now(UTC))
        finally:
            self._holding.discard(reservation.id)
            if not self._holding:
                self._none_held.set()
        return Charge(charged, reservation.balance)

    async def release(self, reservation: Reservation, status: str) -> None:
        """Give the whole hold back (the request failed or was refused)."""
        await self.settle(reservation, status=status, route=None, usage=Usage(), impact=None)

    async def settled(self, timeout_s: float) -> bool:
        """Wait (up to `timeout_s`) until every hold this process took is settled; at shutdown,
        so that requests cut by the drain timeout settle before the database closes."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._none_held.wait()
        except TimeoutError:
            return False
        return True

    async def sweep(self) -> int:
        """Release every hold past its expiry; returns how many."""
        expired = await self._ledger.expired(datetime.now(UTC))
        for reservation in expired:
            await self.release(reservation, "expired")
        if expired:
            log.warning("released expired reservations", extra={"count": len(expired)})
        return len(expired)

    async def run_sweeper(self, interval_s: float) -> None:
        """Sweep now and then every `interval_s` until cancelled."""
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("sweep failed")
            await asyncio.sleep(interval_s)

    async def _insufficient(
        self, principal: Principal, balances: tuple[Balance, ...], amount_pico: int
    ) -> HanseError:
        account = await self._accounts.get_by_id(principal.account_id)
        energy = account.energy_pico if account else 0
        credits = account.credits_pico if account else 0
        details = {
            "plan": principal.plan,
            "required": format_eur(amount_pico),
            "energy_balance": format_eur(energy),
            "credits_balance": format_eur(credits),
        }
        if "credits" in balances:
            return HanseError(
                OUT_OF_CREDITS,
                f"Not enough credits: this request may cost up to {details['required']}, "
                f"the credits balance is {details['credits_balance']}.",
                details=details,
            )
        return HanseError(
            OUT_OF_ENERGY,
            f"Not enough energy: this request may cost up to {details['required']}, "
            f"the energy balance is {details['energy_balance']}.",
            details=details,
        )
