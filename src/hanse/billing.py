"""Billing: reserve the worst case before a provider is called, settle the exact cost after.

A request is paid from one balance: the plan says which ones may pay and in what order. The hold
moves with the request across failover (it covers the dearest candidate route); a request that
failed everywhere costs nothing; a stream cut midway costs what was delivered. The charge is the
price of the tokens used, to the pico-euro, even above the hold (the balance pays the difference as
far as it can; the rest is recorded as unpaid); token counts that no provider could have used
(negative, or beyond the ledger's columns) are clamped first, so they never credit anyone nor make
settlement fail.
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


# The ledger's token columns are 32-bit integers on every database.
MAX_TOKENS_RECORDED = 2**31 - 1


def route_cost_pico(
    route: RouteConfig, prompt_tokens: int, completion_tokens: int, cached_prompt_tokens: int = 0
) -> int:
    """Input tokens x input price (the cached ones at the cached price) + output tokens x output
    price, in pico-euros."""
    cached = min(cached_prompt_tokens, prompt_tokens)
    return (
        (prompt_tokens - cached) * price_per_token_pico(route.input_eur_per_million)
        + cached * price_per_token_pico(route.cached_input_price)
        + completion_tokens * price_per_token_pico(route.output_eur_per_million)
    )


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
        """Hold `amount_pico` with one atomic conditional update, or BILLING_2001/2003. The hold
        expires after the reservation TTL unless renewed (`sweep` renews this process's)."""
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
        """Charge the exact cost, refund what the hold did not need (or take what it lacked from
        the balance, as far as it goes), write the ledger row."""
        prompt, completion, cached = _recordable(usage)
        cost = route_cost_pico(route, prompt, completion, cached) if route else 0
        entry = LedgerEntry(
            status=status,
            route=route.id if route else None,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_prompt_tokens=cached,
            usage_source=usage.source,
            cost_pico=cost,
            energy_kwh=impact.energy_kwh if impact else 0.0,
            carbon_g_co2=impact.carbon_g_co2 if impact else 0.0,
            water_liters=impact.water_liters if impact else 0.0,
        )
        if cost > reservation.amount_pico:
            log.info(
                "cost above the reservation; the balance pays the difference",
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
        """Renew this process's live holds, then release every hold past its expiry: those of a
        process that crashed or lost its database (never a live one); returns how many."""
        now = datetime.now(UTC)
        live = tuple(self._holding)
        if live:
            await self._ledger.renew(live, now + self._ttl)
        expired = [r for r in await self._ledger.expired(now) if r.id not in self._holding]
        for reservation in expired:
            await self.release(reservation, "expired")
        if expired:
            log.warning("released expired reservations", extra={"count": len(expired)})
        return len(expired)

    async def run_sweeper(self, interval_s: float) -> None:
        """Sweep now and then every `interval_s` until cancelled. The interval must be well below
        the reservation TTL: each sweep renews this process's holds for one TTL."""
        if interval_s * 2 > self._ttl.total_seconds():
            log.warning(
                "the sweep interval is over half the reservation TTL: live holds may expire",
                extra={"interval_s": interval_s, "ttl_s": self._ttl.total_seconds()},
            )
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("sweep failed")
            await asyncio.sleep(interval_s)

    async def require_funds(self, principal: Principal, routes: Sequence[RouteConfig]) -> None:
        """BILLING_2001/2003 at once when every route is priced and the balances the plan pays
        from are empty: the cheap check before expensive work (fetching and decoding images,
        tokenising a large prompt). The hold later checks the real amount."""
        if any(route_cost_pico(route, 1, 1) == 0 for route in routes):
            return
        account = await self._accounts.get_by_id(principal.account_id)
        if account is None:
            return
        balances = PLAN_BALANCES[principal.plan]
        held = {"energy": account.energy_pico, "credits": account.credits_pico}
        if all(held[balance] <= 0 for balance in balances):
            cheapest = min(route_cost_pico(route, 1, 1) for route in routes)
            raise await self._insufficient(principal, balances, cheapest)

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


def _recordable(usage: Usage) -> tuple[int, int, int]:
    """Prompt, completion and cached prompt tokens as the ledger can hold them: a negative count
    is 0 (it would credit the account), a count beyond the columns their maximum."""
    counts = (usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens)
    kept = tuple(min(max(int(count), 0), MAX_TOKENS_RECORDED) for count in counts)
    if kept != counts:
        log.error("implausible token counts clamped", extra={"usage": counts})
    return kept[0], kept[1], min(kept[2], kept[0])
