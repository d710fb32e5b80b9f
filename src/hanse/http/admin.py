"""Admin endpoints, behind `HANSE_ADMIN_TOKEN`: the HTTP twin of `hanse keys ...`."""

from __future__ import annotations

import hmac
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from hanse.auth import KNOWN_SCOPES
from hanse.config.ratelimits import PerMinute
from hanse.errors import AUTH_ADMIN_REQUIRED, INVALID_VALUE, NOT_FOUND, HanseError
from hanse.gateway import Gateway
from hanse.money import AMOUNT_PATTERN, format_eur, to_pico
from hanse.storage.accounts import ACCOUNT_NAME_PATTERN, DEFAULT_PLAN, LIMITS, Account, Plan
from hanse.wire.json_body import check_json
from hanse.wire.validation import raise_for_validation_error

_Body = TypeVar("_Body", bound=BaseModel)


class KeyCreate(BaseModel):
    """POST /admin/keys."""

    model_config = ConfigDict(strict=True, extra="forbid")

    account: str = Field(
        default="default", min_length=1, max_length=128, pattern=ACCOUNT_NAME_PATTERN
    )
    scopes: list[str] = Field(default_factory=lambda: ["*"], max_length=32)


def require_admin(request: Request, gateway: Gateway) -> None:
    """AUTH_1010 unless the request carries the admin token (compared in constant time)."""
    expected = gateway.settings.admin_token
    if not expected:
        raise HanseError(AUTH_ADMIN_REQUIRED, "The admin API is disabled: set HANSE_ADMIN_TOKEN.")
    scheme, _, supplied = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        supplied.strip().encode(), expected.encode()
    ):
        raise HanseError(AUTH_ADMIN_REQUIRED)


async def create_key(request: Request, gateway: Gateway) -> dict[str, Any]:
    require_admin(request, gateway)
    spec = await _parse(request, KeyCreate)
    unknown = [s for s in spec.scopes if s not in KNOWN_SCOPES]
    if unknown:
        raise HanseError(
            INVALID_VALUE,
            f"Unknown scope(s): {', '.join(unknown)}.",
            param="scopes",
            details={"parameter": "scopes", "known_scopes": list(KNOWN_SCOPES)},
        )
    key_id, key = await gateway.keys.create(spec.account, spec.scopes)
    return {"id": key_id, "key": key, "account": spec.account, "scopes": spec.scopes}


async def list_keys(request: Request, gateway: Gateway) -> dict[str, Any]:
    require_admin(request, gateway)
    records = await gateway.keys.list()
    return {
        "object": "list",
        "data": [
            {
                "id": r.id,
                "account": r.account,
                "hint": r.hint,
                "scopes": list(r.scopes),
                "created_at": r.created_at.isoformat(),
                "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
            }
            for r in records
        ],
    }


async def revoke_key(request: Request, gateway: Gateway) -> dict[str, Any]:
    require_admin(request, gateway)
    key_id = request.path_params["key_id"]
    if not await gateway.keys.revoke(key_id):
        raise HanseError(NOT_FOUND, f"No live key with id `{key_id}`.", details={"key_id": key_id})
    return {"id": key_id, "revoked": True}


class AccountCreate(BaseModel):
    """POST /admin/accounts."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=ACCOUNT_NAME_PATTERN)
    plan: Plan = DEFAULT_PLAN


class AccountPatch(BaseModel):
    """PATCH /admin/accounts/{name}: what is given changes; a limit of null goes back to the plan's."""

    model_config = ConfigDict(strict=True, extra="forbid")

    plan: Plan | None = None
    requests_per_minute: PerMinute | None = None
    tokens_per_minute: PerMinute | None = None


class TopUp(BaseModel):
    """POST /admin/accounts/{name}/topup: decimal strings, so no float ever touches money."""

    model_config = ConfigDict(strict=True, extra="forbid")

    credits: str = Field(default="0", pattern=AMOUNT_PATTERN)
    energy: str = Field(default="0", pattern=AMOUNT_PATTERN)


def account_body(account: Account) -> dict[str, Any]:
    return {
        "name": account.name,
        "plan": account.plan,
        "balances": {
            "energy": format_eur(account.energy_pico),
            "credits": format_eur(account.credits_pico),
        },
        "created_at": account.created_at.isoformat(),
        # The account's own limits; null: its plan's (the catalog's `[rate_limits]`).
        "rate_limits": {
            "requests_per_minute": account.requests_per_minute,
            "tokens_per_minute": account.tokens_per_minute,
        },
    }


async def create_account(request: Request, gateway: Gateway) -> dict[str, Any]:
    require_admin(request, gateway)
    spec = await _parse(request, AccountCreate)
    account, _ = await gateway.accounts.create(spec.name, spec.plan)
    return account_body(account)


async def get_account(request: Request, gateway: Gateway) -> dict[str, Any]:
    require_admin(request, gateway)
    return account_body(await _account(gateway, request.path_params["name"]))


async def patch_account(request: Request, gateway: Gateway) -> dict[str, Any]:
    require_admin(request, gateway)
    spec = await _parse(request, AccountPatch)
    name = request.path_params["name"]
    account = await _account(gateway, name)
    if spec.plan is not None:
        account = _found(await gateway.accounts.set_plan(name, spec.plan), name)
    limits = {key: getattr(spec, key) for key in LIMITS if key in spec.model_fields_set}
    if limits:
        account = _found(await gateway.accounts.set_limits(name, limits), name)
    return account_body(account)


async def top_up(request: Request, gateway: Gateway) -> dict[str, Any]:
    require_admin(request, gateway)
    spec = await _parse(request, TopUp)
    name = request.path_params["name"]
    account = await gateway.accounts.top_up(
        name, to_pico(Decimal(spec.energy)), to_pico(Decimal(spec.credits))
    )
    return account_body(_found(account, name))


async def _parse(request: Request, model: type[_Body]) -> _Body:
    body = await request.body() or b"{}"
    check_json(body)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise_for_validation_error(exc)


async def _account(gateway: Gateway, name: str) -> Account:
    return _found(await gateway.accounts.get(name), name)


def _found(account: Account | None, name: str) -> Account:
    if account is None:
        raise HanseError(NOT_FOUND, f"No account named `{name}`.", details={"account": name})
    return account
