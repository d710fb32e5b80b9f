"""`hanse accounts ...` and `hanse usage`: plans, balances and what was spent."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from hanse.cli.common import account_name, usage_of, with_engine
from hanse.errors import HanseError
from hanse.money import AMOUNT_PATTERN, format_eur, to_pico
from hanse.settings import Settings
from hanse.storage.accounts import LIMITS, PLANS, Account, AccountStore
from hanse.storage.ledger import LedgerStore
from hanse.usage import EPOCH, parse_time, usage_report


def register(commands: Any) -> None:
    accounts = commands.add_parser("accounts", help="manage accounts and balances")
    accounts.set_defaults(command=usage_of(accounts))
    sub = accounts.add_subparsers(title="account commands")
    create = sub.add_parser("create", help="create an account (no-op if it exists)")
    create.add_argument("name", type=account_name)
    create.add_argument("--plan", choices=PLANS, default=PLANS[0])
    create.set_defaults(command=_create)
    topup = sub.add_parser("topup", help="add credits (EUR) and/or energy to an account")
    topup.add_argument("name")
    topup.add_argument("--credits", default="0", help="decimal EUR, e.g. 10.50")
    topup.add_argument("--energy", default="0", help="decimal energy units (1 = 1 EUR of usage)")
    topup.set_defaults(command=_topup)
    plan = sub.add_parser("plan", help="change an account's plan")
    plan.add_argument("name")
    plan.add_argument("plan", choices=PLANS)
    plan.set_defaults(command=_plan)
    limits = sub.add_parser("limits", help="set an account's own rate limits")
    limits.add_argument("name")
    for flag in ("--requests-per-minute", "--tokens-per-minute"):
        limits.add_argument(
            flag, type=_limit, default=argparse.SUPPRESS, help="a count (0: none), or `plan`"
        )
    limits.set_defaults(command=_limits)
    show = sub.add_parser("show", help="an account's plan, balances and own rate limits")
    show.add_argument("name")
    show.set_defaults(command=_show)

    usage = commands.add_parser("usage", help="an account's spend, energy and carbon per model")
    usage.add_argument("account")
    usage.add_argument("--start", help="ISO 8601 or unix seconds (default: everything)")
    usage.add_argument("--end", help="ISO 8601 or unix seconds (default: now)")
    usage.add_argument("--model")
    usage.set_defaults(command=_usage)


def _create(args: argparse.Namespace) -> int:
    account, created = with_engine(
        Settings(), lambda engine: AccountStore(engine).create(args.name, args.plan)
    )
    if not created:
        print(f"account {args.name!r} exists already", file=sys.stderr)
    _print(account)
    return 0


def _topup(args: argparse.Namespace) -> int:
    try:
        energy, credits = _amount(args.energy), _amount(args.credits)
    except ValueError as exc:
        print(f"hanse: {exc}", file=sys.stderr)
        return 2
    account = with_engine(
        Settings(), lambda engine: AccountStore(engine).top_up(args.name, energy, credits)
    )
    return _print_or_missing(account, args.name)


def _plan(args: argparse.Namespace) -> int:
    account = with_engine(
        Settings(), lambda engine: AccountStore(engine).set_plan(args.name, args.plan)
    )
    return _print_or_missing(account, args.name)


def _limits(args: argparse.Namespace) -> int:
    given = vars(args)
    changes = {name: given[name] for name in LIMITS if name in given}
    if not changes:
        print("hanse: give --requests-per-minute and/or --tokens-per-minute", file=sys.stderr)
        return 2
    account = with_engine(
        Settings(), lambda engine: AccountStore(engine).set_limits(args.name, changes)
    )
    return _print_or_missing(account, args.name)


def _limit(text: str) -> int | None:
    """A limit as typed: a count, or `plan` (None: the plan's limit)."""
    if text == "plan":
        return None
    if not text.isdigit() or int(text) > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a count nor `plan`")
    return int(text)


def _show(args: argparse.Namespace) -> int:
    account = with_engine(Settings(), lambda engine: AccountStore(engine).get(args.name))
    return _print_or_missing(account, args.name)


def _usage(args: argparse.Namespace) -> int:
    try:
        start = parse_time(args.start, "start", EPOCH)
        end = parse_time(args.end, "end", datetime.now(UTC) + timedelta(seconds=1))
    except HanseError as exc:
        print(f"hanse: {exc.message}", file=sys.stderr)
        return 2

    async def report(engine: Any) -> dict[str, Any] | None:
        account = await AccountStore(engine).get(args.account)
        if account is None:
            return None
        return await usage_report(LedgerStore(engine), account, start, end, args.model)

    result = with_engine(Settings(), report)
    if result is None:
        print(f"hanse: no account named {args.account!r}", file=sys.stderr)
        return 1
    print(f"usage of {result['account']} from {result['start']} to {result['end']}")
    header = f"{'model':<28} {'requests':>8} {'in':>9} {'out':>9} {'energy':>14} {'credits':>14}"
    print(header + f" {'kWh':>12} {'gCO2':>12} {'litres':>12}")
    for row in [*result["data"], {"model": "TOTAL", **result["totals"]}]:
        print(
            f"{row['model']:<28} {row['requests']:>8} {row['prompt_tokens']:>9} "
            f"{row['completion_tokens']:>9} {row['cost']['energy']:>14} "
            f"{row['cost']['credits']:>14} {row['energy_kwh']:>12.6g} "
            f"{row['carbon_g_co2']:>12.6g} {row['water_liters']:>12.6g}"
        )
    return 0


def _amount(text: str) -> int:
    if not re.match(AMOUNT_PATTERN, text):
        raise ValueError(f"{text!r} is not an amount (up to 12 decimals, below 1000000)")
    try:
        return to_pico(Decimal(text))
    except InvalidOperation as exc:
        raise ValueError(f"{text!r} is not an amount") from exc


def _print_or_missing(account: Account | None, name: str) -> int:
    if account is None:
        print(f"hanse: no account named {name!r}", file=sys.stderr)
        return 1
    _print(account)
    return 0


def _print(account: Account) -> None:
    print(f"account  {account.name}")
    print(f"plan     {account.plan}")
    print(f"energy   {format_eur(account.energy_pico)}")
    print(f"credits  {format_eur(account.credits_pico)}")
    for label, own in (
        ("requests/min", account.requests_per_minute),
        ("tokens/min", account.tokens_per_minute),
    ):
        print(f"{label:<13}{'the plan' if own is None else own}")
