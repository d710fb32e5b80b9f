"""The vault's endpoints: blueprints and skills (create, list, read, replace, delete) and rotation.

Scopes `vault.read` / `vault.write`; the vault key travels in `X-Vault-Key`. A listing without the
key shows ids and timestamps only; with it, names too. The first write creates the account's vault
with the key it carries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from hanse.auth import SCOPE_VAULT_READ, SCOPE_VAULT_WRITE, Principal, require_scope
from hanse.blueprints.models import is_item_id, parse_blueprint, parse_skill
from hanse.errors import INVALID_VALUE, HanseError
from hanse.gateway import Gateway
from hanse.pipeline import authenticate
from hanse.trace import Trace
from hanse.vault.sealing import MAX_KEY_LENGTH
from hanse.vault.service import (
    VAULT_KEY_HEADER,
    Kind,
    StoredItem,
    VaultSession,
    not_found,
    vault_clients,
)
from hanse.wire.json_body import check_json
from hanse.wire.validation import raise_for_validation_error

VaultHandler = Callable[[Request, Gateway, Trace], Awaitable[dict[str, Any]]]


class RotateBody(BaseModel):
    """POST /v1/vault/rotate: the old key in `X-Vault-Key`, the new one here."""

    model_config = ConfigDict(strict=True, extra="forbid")

    new_key: str = Field(max_length=MAX_KEY_LENGTH)


async def _principal(request: Request, gateway: Gateway, trace: Trace, scope: str) -> Principal:
    principal = await authenticate(gateway, request.headers, trace)
    require_scope(principal, scope)
    return principal


def _key(request: Request) -> str | None:
    return request.headers.get(VAULT_KEY_HEADER.lower())


def _unlock(
    request: Request, gateway: Gateway, principal: Principal, *, create: bool = False
) -> Awaitable[VaultSession]:
    """The vault, unlocked with the request's key; wrong keys count per address and API key."""
    return gateway.vault.unlock(
        principal.account_id,
        _key(request),
        create=create,
        clients=_clients(request, principal),
    )


def _clients(request: Request, principal: Principal) -> list[str]:
    return vault_clients(principal.key_id, request.client.host if request.client else None)


def _item_body(item: StoredItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "object": item.kind,
        "name": item.data.get("name"),
        "created_at": int(item.created_at.timestamp()),
        "updated_at": int(item.updated_at.timestamp()),
        "config": item.data,
    }


def _kind(request: Request) -> Kind:
    return "blueprint" if request.url.path.startswith("/v1/blueprints") else "skill"


async def _checked(request: Request, session: VaultSession, kind: Kind) -> dict[str, Any]:
    """The body, validated as a blueprint or skill; a blueprint's skills must be in the vault."""
    body = await request.body()
    check_json(body)
    if kind == "skill":
        return parse_skill(body, "").model_dump(mode="json", by_alias=True, exclude_unset=True)
    blueprint = parse_blueprint(body, "")
    for index, skill_id in enumerate(blueprint.skills):
        if not await session.exists("skill", skill_id):
            param = f"skills[{index}]"
            raise HanseError(
                INVALID_VALUE,
                f"No skill with id `{skill_id}` in this account's vault.",
                param=param,
                details={"parameter": param},
            )
    return blueprint.model_dump(mode="json", by_alias=True, exclude_unset=True)


async def create_item(request: Request, gateway: Gateway, trace: Trace) -> dict[str, Any]:
    principal = await _principal(request, gateway, trace, SCOPE_VAULT_WRITE)
    kind = _kind(request)
    session = await _unlock(request, gateway, principal, create=True)
    return _item_body(await session.put(kind, await _checked(request, session, kind)))


async def list_items(request: Request, gateway: Gateway, trace: Trace) -> dict[str, Any]:
    principal = await _principal(request, gateway, trace, SCOPE_VAULT_READ)
    kind = _kind(request)
    if _key(request) is None:
        records = await gateway.vault.list_records(principal.account_id, kind)
        data = [
            {
                "id": r.id,
                "object": kind,
                "created_at": int(r.created_at.timestamp()),
                "updated_at": int(r.updated_at.timestamp()),
            }
            for r in records
        ]
    else:
        session = await _unlock(request, gateway, principal)
        data = [
            {k: v for k, v in _item_body(item).items() if k != "config"}
            for item in await session.list(kind)
        ]
    return {"object": "list", "data": data}


async def get_item(request: Request, gateway: Gateway, trace: Trace) -> dict[str, Any]:
    principal = await _principal(request, gateway, trace, SCOPE_VAULT_READ)
    kind, item_id = _kind(request), request.path_params["item_id"]
    session = await _unlock(request, gateway, principal)
    if not is_item_id(item_id):
        raise not_found(kind, item_id)
    return _item_body(await session.get(kind, item_id))


async def replace_item(request: Request, gateway: Gateway, trace: Trace) -> dict[str, Any]:
    principal = await _principal(request, gateway, trace, SCOPE_VAULT_WRITE)
    kind, item_id = _kind(request), request.path_params["item_id"]
    session = await _unlock(request, gateway, principal)
    if not is_item_id(item_id) or not await session.exists(kind, item_id):
        raise not_found(kind, item_id)
    return _item_body(await session.put(kind, await _checked(request, session, kind), item_id))


async def delete_item(request: Request, gateway: Gateway, trace: Trace) -> dict[str, Any]:
    principal = await _principal(request, gateway, trace, SCOPE_VAULT_WRITE)
    kind, item_id = _kind(request), request.path_params["item_id"]
    session = await _unlock(request, gateway, principal)
    if not is_item_id(item_id):
        raise not_found(kind, item_id)
    await session.delete(kind, item_id)
    return {"id": item_id, "object": kind, "deleted": True}


async def rotate(request: Request, gateway: Gateway, trace: Trace) -> dict[str, Any]:
    principal = await _principal(request, gateway, trace, SCOPE_VAULT_WRITE)
    body = await request.body() or b"{}"
    check_json(body)
    try:
        spec = RotateBody.model_validate_json(body)
    except ValidationError as exc:
        raise_for_validation_error(exc)
    count = await gateway.vault.rotate(
        principal.account_id, _key(request), spec.new_key, _clients(request, principal)
    )
    return {"object": "vault.rotation", "items": count}


# (path, method, handler, status) for the app's route table.
ROUTES: list[tuple[str, str, VaultHandler, int]] = [
    (path, method, handler, status)
    for base in ("/v1/blueprints", "/v1/skills")
    for path, method, handler, status in (
        (base, "POST", create_item, 201),
        (base, "GET", list_items, 200),
        (base + "/{item_id}", "GET", get_item, 200),
        (base + "/{item_id}", "PUT", replace_item, 200),
        (base + "/{item_id}", "DELETE", delete_item, 200),
    )
] + [("/v1/vault/rotate", "POST", rotate, 200)]
