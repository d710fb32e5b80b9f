"""Admin endpoints, behind `HANSE_ADMIN_TOKEN`: the HTTP twin of `hanse keys ...`."""

from __future__ import annotations

import hmac
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from hanse.auth import KNOWN_SCOPES
from hanse.errors import AUTH_ADMIN_REQUIRED, INVALID_VALUE, NOT_FOUND, HanseError
from hanse.gateway import Gateway
from hanse.wire.validation import raise_for_validation_error


class KeyCreate(BaseModel):
    """POST /admin/keys."""

    model_config = ConfigDict(strict=True, extra="forbid")

    account: str = Field(default="default", min_length=1, max_length=128)
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
    try:
        spec = KeyCreate.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        raise_for_validation_error(exc)
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
