"""`hanse keys ...`, keys never stored or logged in the clear, and GET /v1/models."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.harness import GatewayProcess, assert_schema

MODEL = "smollm2-135m"
KEY = re.compile(r"^sk-mel-[A-Za-z0-9_-]{128}$")


def _listing(gateway: GatewayProcess) -> list[str]:
    result = gateway.cli("keys", "list")
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _row(gateway: GatewayProcess, key: str) -> list[str]:
    [row] = [line.split() for line in _listing(gateway)[1:] if f"...{key[-4:]}" in line]
    return row


# --- hanse keys -----------------------------------------------------------------------------------


def test_create_prints_only_the_key(gateway: GatewayProcess) -> None:
    result = gateway.cli("keys", "create", "--account", "cli-tests", "--scopes", "inference.chat")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n") and len(result.stdout.splitlines()) == 1
    key = result.stdout.strip()
    assert KEY.match(key), key
    assert key not in result.stderr and "cli-tests" in result.stderr


def test_keys_are_distinct(gateway: GatewayProcess) -> None:
    assert gateway.create_key() != gateway.create_key()


def test_account_is_created_when_missing(gateway: GatewayProcess) -> None:
    assert not any("brand-new-account" in line for line in _listing(gateway))
    key = gateway.create_key(account="brand-new-account", scopes="inference.models")
    row = _row(gateway, key)
    assert row[1] == "brand-new-account" and row[3] == "inference.models"
    # A second key joins the existing account.
    other = gateway.create_key(account="brand-new-account")
    assert _row(gateway, other)[1] == "brand-new-account"


@pytest.mark.parametrize("scopes", ["inference.everything", "inference.chat,vault.admin", "admin"])
def test_unknown_scope_is_refused(gateway: GatewayProcess, scopes: str) -> None:
    before = _listing(gateway)
    result = gateway.cli("keys", "create", "--account", "refused", "--scopes", scopes)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "unknown scope" in result.stderr and "inference.chat" in result.stderr
    assert _listing(gateway) == before


def test_list_shows_id_account_hint_scopes_and_never_the_secret(gateway: GatewayProcess) -> None:
    key = gateway.create_key(account="listed", scopes="inference.chat,inference.models")
    header, *_ = lines = _listing(gateway)
    assert header.split()[:4] == ["id", "account", "key", "scopes"]
    key_id, account, hint, scopes, *_ = _row(gateway, key)
    assert re.match(r"^key_[0-9a-f]{16}$", key_id)
    assert account == "listed"
    assert hint == f"sk-mel-...{key[-4:]}"
    assert scopes == "inference.chat,inference.models"
    text = "\n".join(lines)
    assert key not in text and key[len("sk-mel-") :][:16] not in text


def test_revoke_works_once(gateway: GatewayProcess) -> None:
    key = gateway.create_key(account="revoked")
    key_id = _row(gateway, key)[0]
    first = gateway.cli("keys", "revoke", key_id)
    assert first.returncode == 0 and key_id in first.stdout
    assert _row(gateway, key)[-1] != "-"  # the revoked column has a time now
    again = gateway.cli("keys", "revoke", key_id)
    assert again.returncode == 1 and key_id in again.stderr
    assert gateway.cli("keys", "revoke", "key_0000000000000000").returncode == 1


# --- secrets stay secret --------------------------------------------------------------------------


def test_database_never_holds_a_key(gateway: GatewayProcess) -> None:
    keys = [gateway.create_key(account="stored") for _ in range(3)]
    stored = gateway.stored()  # SQLite: the database, its WAL and shared-memory files
    assert stored
    for name, data in stored:
        for key in keys:
            assert key.encode() not in data, name
            assert key[len("sk-mel-") :][:32].encode() not in data, name


def test_server_log_never_holds_a_key(gateway: GatewayProcess) -> None:
    key = gateway.create_key(account="logged")
    wrong = "sk-mel-" + "Wrong_key-" * 12 + "12345678"
    base = gateway.base_url
    good = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{base}/v1/models", headers=good).status_code == 200
    assert httpx.get(f"{base}/v1/models/{MODEL}", headers={"x-api-key": key}).status_code == 200
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert (
        httpx.post(f"{base}/v1/chat/completions", headers=good, json=chat, timeout=60).status_code
        == 200
    )
    invalid = {**chat, "temperature": 9}
    assert httpx.post(f"{base}/v1/chat/completions", headers=good, json=invalid).status_code == 400
    refused = httpx.post(
        f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {wrong}"}, json=chat
    )
    assert refused.status_code == 401 and wrong not in refused.text
    log = gateway.log()
    assert '"status":401' in log  # the refused request was logged...
    for secret in (key, wrong):  # ...and no key, whole or in part, was
        assert secret not in log
        assert secret[len("sk-mel-") :][:24] not in log


# --- GET /v1/models -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth(gateway: GatewayProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway.create_key(scopes='inference.models')}"}


def _get(gateway: GatewayProcess, path: str, auth: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{gateway.base_url}{path}", headers=auth, timeout=30)


def test_list_models(gateway: GatewayProcess, auth: dict[str, str]) -> None:
    response = _get(gateway, "/v1/models", auth)
    assert response.status_code == 200 and response.headers["x-request-id"]
    body = response.json()
    assert_schema("ListModelsResponse", body)
    assert body["object"] == "list"
    [model] = [m for m in body["data"] if m["id"] == MODEL]
    assert model["object"] == "model" and "_meta" not in model


def _assert_meta(model: dict[str, Any]) -> None:
    meta = model["_meta"]
    assert meta["type"] == "chat"
    assert meta["input_modalities"] == ["text"] and meta["output_modalities"] == ["text"]
    capabilities = meta["capabilities"]
    for name in (
        "streaming",
        "function_calling",
        "vision",
        "structured_output",
        "json_schema",
        "audio_input",
        "reasoning",
    ):
        assert isinstance(capabilities[name], bool), name
    assert capabilities["streaming"] and capabilities["function_calling"]
    assert not capabilities["vision"]
    assert meta["context_length"] == 8192
    assert meta["max_output_tokens"] == 8192
    assert meta["display_name"]
    pricing = meta["pricing"]
    for field in ("input_cost_per_million_eur", "output_cost_per_million_eur"):
        assert isinstance(pricing[field], str) and float(pricing[field]) >= 0  # decimal strings


def test_list_models_with_meta(gateway: GatewayProcess, auth: dict[str, str]) -> None:
    body = _get(gateway, "/v1/models?include_meta=true", auth).json()
    assert_schema("ListModelsResponse", body)
    [model] = [m for m in body["data"] if m["id"] == MODEL]
    _assert_meta(model)


def test_get_model(gateway: GatewayProcess, auth: dict[str, str]) -> None:
    response = _get(gateway, f"/v1/models/{MODEL}", auth)
    assert response.status_code == 200
    body = response.json()
    assert_schema("Model", body)
    assert body["id"] == MODEL and "_meta" not in body
    with_meta = _get(gateway, f"/v1/models/{MODEL}?include_meta=true", auth).json()
    assert_schema("Model", with_meta)
    _assert_meta(with_meta)


def test_get_unknown_model(gateway: GatewayProcess, auth: dict[str, str]) -> None:
    response = _get(gateway, "/v1/models/no-such-model", auth)
    assert response.status_code == 404 and response.headers["x-request-id"]
    body = response.json()
    assert_schema("ErrorResponse", body)
    assert body["error"]["code"] == "INFERENCE_3001"
    assert body["error"]["type"] == "not_found_error"
    assert body["error"]["details"]["model"] == "no-such-model"


def test_include_meta_must_be_a_boolean(gateway: GatewayProcess, auth: dict[str, str]) -> None:
    response = _get(gateway, "/v1/models?include_meta=maybe", auth)
    assert response.status_code == 400
    body = response.json()
    assert_schema("ErrorResponse", body)
    assert (body["error"]["code"], body["error"]["param"]) == ("VALIDATION_4005", "include_meta")
