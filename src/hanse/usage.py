"""Usage reports: the ledger of one account, totalled per model (for GET /v1/usage and the CLI)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hanse.errors import INVALID_VALUE, HanseError
from hanse.money import format_eur
from hanse.storage.accounts import Account
from hanse.storage.ledger import LedgerStore, UsageRow

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(value: str | None, param: str, default: datetime) -> datetime:
    """ISO 8601 (UTC when no offset is given) or unix seconds; `default` when absent.

    The result is in UTC, as the ledger stores times: an offset is applied, never dropped. A time
    whose UTC form falls outside years 1-9999 is refused, not left for the database to fail on."""
    if value is None or value == "":
        return default
    try:
        parsed = (
            datetime.fromtimestamp(float(value), UTC)
            if value.replace(".", "", 1).isdigit()
            else datetime.fromisoformat(value)
        )
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise HanseError(
            INVALID_VALUE,
            f"`{param}` must be an ISO 8601 time or unix seconds, in years 1-9999 (UTC).",
            param=param,
            details={"parameter": param},
        ) from exc


async def usage_report(
    ledger: LedgerStore, account: Account, start: datetime, end: datetime, model: str | None
) -> dict[str, Any]:
    """Totals and per-model rows of requests, tokens, cost, kWh, gCO2 and litres."""
    rows = await ledger.usage(account.id, start, end, model)
    per_model: dict[str, list[UsageRow]] = {}
    for row in rows:
        per_model.setdefault(row.model, []).append(row)
    return {
        "object": "usage",
        "account": account.name,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "totals": _summary(rows),
        "data": [{"model": name, **_summary(group)} for name, group in per_model.items()],
    }


def _summary(rows: list[UsageRow]) -> dict[str, Any]:
    return {
        "requests": sum(r.requests for r in rows),
        "prompt_tokens": sum(r.prompt_tokens for r in rows),
        "completion_tokens": sum(r.completion_tokens for r in rows),
        "cost": {
            "energy": format_eur(sum(r.cost_pico for r in rows if r.paid_with == "energy")),
            "credits": format_eur(sum(r.cost_pico for r in rows if r.paid_with == "credits")),
            "unpaid": format_eur(sum(r.unpaid_pico for r in rows)),
        },
        "energy_kwh": sum(r.energy_kwh for r in rows),
        "carbon_g_co2": sum(r.carbon_g_co2 for r in rows),
        "water_liters": sum(r.water_liters for r in rows),
    }
