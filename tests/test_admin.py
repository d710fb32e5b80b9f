"""Admin endpoints behind HANSE_ADMIN_TOKEN: create, list and revoke keys over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.harness import GatewayProcess, assert_schema

ADMIN_TOKEN = "admin-test-token-7f3a"


@pytest.fixture(scope="module")
def admin_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        Path(tmp_path_factory.mktemp("admin")), env={"HANSE_ADMIN_TOKEN": ADMIN_TOKEN}
    ).start()
    yield process
    process.stop()


def _admin(token: str | None = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.mark.parametrize("token", [None, "wrong-token", ADMIN_TOKEN[:-1]])
def test_admin_needs_the_token(admin_gateway: GatewayProcess, token: str | None) -> None:
    response = httpx.get(f"{admin_gateway.base_url}/admin/keys", headers=_admin(token))
    assert response.status_code == 401
    assert_schema("ErrorResponse", response.json())
    assert response.json()["error"]["code"] == "AUTH_1010"


def test_admin_disabled_without_a_configured_token(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.base_url}/admin/keys", headers=_admin())
    assert response.status_code == 401
    assert "HANSE_ADMIN_TOKEN" in response.json()["error"]["message"]


def test_create_use_list_and_revoke(admin_gateway: GatewayProcess) -> None:
    base = admin_gateway.base_url
    created = httpx.post(
        f"{base}/admin/keys",
        headers=_admin(),
        json={"account": "acme", "scopes": ["inference.chat", "inference.models"]},
    )
    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith("sk-mel-")
    assert len(body["key"]) == len("sk-mel-") + 128
    client = OpenAI(base_url=f"{base}/v1", api_key=body["key"], max_retries=0)
    assert [m.id for m in client.models.list()] == ["smollm2-135m"]

    listed = httpx.get(f"{base}/admin/keys", headers=_admin()).json()["data"]
    entry = next(k for k in listed if k["id"] == body["id"])
    assert entry["account"] == "acme"
    assert entry["scopes"] == ["inference.chat", "inference.models"]
    assert entry["revoked_at"] is None
    assert all(body["key"] not in str(k) for k in listed)

    revoked = httpx.delete(f"{base}/admin/keys/{body['id']}", headers=_admin())
    assert revoked.json() == {"id": body["id"], "revoked": True}
    refused = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {body['key']}"})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "AUTH_1008"
    again = httpx.delete(f"{base}/admin/keys/{body['id']}", headers=_admin())
    assert again.status_code == 404


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"account": "x", "scopes": ["everything"]}, "VALIDATION_4005"),
        ({"account": 5}, "VALIDATION_4003"),
        ({"account": "x", "color": "red"}, "VALIDATION_4007"),
    ],
)
def test_bad_key_requests(admin_gateway: GatewayProcess, payload: object, code: str) -> None:
    response = httpx.post(f"{admin_gateway.base_url}/admin/keys", headers=_admin(), json=payload)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
