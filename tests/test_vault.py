"""The vault: blueprints and skills stored sealed, used with `blueprint_id` / `skill_ids` and the
`X-Vault-Key` header; wrong, missing and rotated keys; ciphertexts moved in the database; and no
plaintext anywhere on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.composition import UPSTREAM, post_vault, reset, sdk
from tests.composition import start_gateway as start
from tests.harness import GatewayProcess
from tests.upstream import ScriptedUpstream

VAULT_KEY = "correct horse battery staple 42"
OTHER_KEY = "another-vault-key-for-account-b"
MARKER = "Zyxwvut-blueprint-plaintext-7781"
BLUEPRINT: dict[str, Any] = {
    "name": "support-bot",
    "model": UPSTREAM,
    "system": f"{MARKER} You help customers of {{{{company}}}}.",
    "variables": {"company": {"required": True}},
    "overrides": [{"when": {"last_user_matches": "^ping$"}, "reply": "pong"}],
}
SKILL: dict[str, Any] = {
    "name": "weather",
    "instructions": "Use get_weather for weather questions.",
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[GatewayProcess]:
    process = start(Path(tmp_path_factory.mktemp("vault")), upstream)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def key(gateway: GatewayProcess) -> str:
    return gateway.create_key(account="vault-a")


@pytest.fixture
def scripted(upstream: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    reset(upstream)
    yield upstream
    reset(upstream)


def _request(
    gateway: GatewayProcess, key: str, method: str, path: str, vault_key: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if vault_key is not None:
        headers["X-Vault-Key"] = vault_key
    return httpx.request(method, f"{gateway.base_url}{path}", headers=headers, timeout=60)


def _create(gateway: GatewayProcess, key: str, kind: str, body: Any, vault_key: str) -> str:
    response = post_vault(gateway, key, f"/v1/{kind}", body, vault_key)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def _ask(client: OpenAI, vault_key: str | None, **body: Any) -> Any:
    headers = {"X-Vault-Key": vault_key} if vault_key else {}
    return client.chat.completions.create(
        model=openai.omit,
        messages=[{"role": "user", "content": body.pop("text", "Where is my parcel?")}],
        extra_headers=headers,
        extra_body=body,
    )


def test_store_list_read_replace_delete(gateway: GatewayProcess, key: str) -> None:
    skill_id = _create(gateway, key, "skills", SKILL, VAULT_KEY)
    blueprint_id = _create(
        gateway, key, "blueprints", {**BLUEPRINT, "skills": [skill_id]}, VAULT_KEY
    )

    anonymous = _request(gateway, key, "GET", "/v1/blueprints").json()["data"]
    assert [set(item) for item in anonymous] == [{"id", "object", "created_at", "updated_at"}]
    named = _request(gateway, key, "GET", "/v1/blueprints", VAULT_KEY).json()["data"]
    assert [(item["id"], item["name"]) for item in named] == [(blueprint_id, "support-bot")]

    item = _request(gateway, key, "GET", f"/v1/blueprints/{blueprint_id}", VAULT_KEY).json()
    assert item["config"]["system"] == BLUEPRINT["system"]
    assert item["config"]["skills"] == [skill_id]

    renamed = {**BLUEPRINT, "name": "support-bot-2"}
    response = httpx.put(
        f"{gateway.base_url}/v1/blueprints/{blueprint_id}",
        json=renamed,
        headers={"Authorization": f"Bearer {key}", "X-Vault-Key": VAULT_KEY},
    )
    assert response.status_code == 200 and response.json()["name"] == "support-bot-2"

    deleted = _request(gateway, key, "DELETE", f"/v1/blueprints/{blueprint_id}", VAULT_KEY)
    assert deleted.json() == {"id": blueprint_id, "object": "blueprint", "deleted": True}
    gone = _request(gateway, key, "GET", f"/v1/blueprints/{blueprint_id}", VAULT_KEY)
    assert (gone.status_code, _code(gone)) == (404, "VALIDATION_4041")


def test_objects_are_validated_on_write(gateway: GatewayProcess, key: str) -> None:
    bad = {"name": "x", "railguards": {"input": [{"type": "deny_pattern", "pattern": "(["}]}}
    response = post_vault(gateway, key, "/v1/blueprints", bad, VAULT_KEY)
    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (400, "VALIDATION_4005")
    assert error["param"] == "railguards.input[0].pattern"
    missing_skill = {"name": "x", "skills": ["00000000-0000-4000-8000-000000000000"]}
    response = post_vault(gateway, key, "/v1/blueprints", missing_skill, VAULT_KEY)
    assert response.json()["error"]["param"] == "skills[0]"
    clash = {**SKILL, "tools": SKILL["tools"] * 2}
    response = post_vault(gateway, key, "/v1/skills", clash, VAULT_KEY)
    assert response.json()["error"]["param"] == "tools[1].function.name"


def test_chat_with_vault_blueprint_and_skill(
    gateway: GatewayProcess, key: str, scripted: ScriptedUpstream
) -> None:
    skill_id = _create(gateway, key, "skills", SKILL, VAULT_KEY)
    blueprint_id = _create(gateway, key, "blueprints", BLUEPRINT, VAULT_KEY)
    client = sdk(gateway, key)
    response = _ask(
        client,
        VAULT_KEY,
        blueprint_id=blueprint_id,
        skill_ids=[skill_id],
        variables={"company": "Hanse"},
    )
    assert response.model == UPSTREAM
    sent = scripted.received()[0].body
    assert sent["messages"][0]["content"] == (
        f"{MARKER} You help customers of Hanse.\n\nUse get_weather for weather questions."
    )
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    override = _ask(
        client, VAULT_KEY, blueprint_id=blueprint_id, text="ping", variables={"company": "x"}
    )
    assert override.choices[0].message.content == "pong"
    # Inline wins over the id, and needs no vault key.
    inline = _ask(
        client, None, blueprint_id=blueprint_id, blueprint_config={"name": "i", "model": UPSTREAM}
    )
    assert inline.choices[0].finish_reason == "stop"


def test_missing_wrong_and_unknown(gateway: GatewayProcess, key: str) -> None:
    blueprint_id = _create(gateway, key, "blueprints", BLUEPRINT, VAULT_KEY)
    client = sdk(gateway, key)
    with pytest.raises(openai.AuthenticationError) as missing:
        _ask(client, None, blueprint_id=blueprint_id)
    assert missing.value.code == "AUTH_1030"
    with pytest.raises(openai.PermissionDeniedError) as wrong:
        _ask(client, "not the vault key at all", blueprint_id=blueprint_id)
    assert wrong.value.code == "AUTH_1031"
    assert "vault key is invalid" in wrong.value.message
    for unknown in ("00000000-0000-4000-8000-000000000000", "not-a-uuid"):
        with pytest.raises(openai.NotFoundError) as exc:
            _ask(client, VAULT_KEY, blueprint_id=unknown, variables={"company": "x"})
        assert exc.value.code == "VALIDATION_4041"
    listing = _request(gateway, key, "GET", "/v1/skills", "wrong key, wrong key")
    assert (listing.status_code, _code(listing)) == (403, "AUTH_1031")
    read = _request(gateway, key, "GET", f"/v1/blueprints/{blueprint_id}")
    assert (read.status_code, _code(read)) == (401, "AUTH_1030")


def test_scopes(gateway: GatewayProcess) -> None:
    chat_only = gateway.create_key(account="vault-a", scopes="inference.chat")
    response = _request(gateway, chat_only, "GET", "/v1/blueprints")
    assert (response.status_code, _code(response)) == (403, "AUTH_1015")
    reader = gateway.create_key(account="vault-a", scopes="vault.read")
    assert _request(gateway, reader, "GET", "/v1/blueprints").status_code == 200
    response = post_vault(gateway, reader, "/v1/skills", SKILL, VAULT_KEY)
    assert response.json()["error"]["details"] == {"required_scope": "vault.write"}


def test_a_new_vault_key_must_be_long_enough(gateway: GatewayProcess) -> None:
    fresh = gateway.create_key(account="vault-short")
    response = post_vault(gateway, fresh, "/v1/skills", SKILL, "short")
    assert (response.status_code, _code(response)) == (400, "VALIDATION_4004")


def test_moved_ciphertexts_do_not_open(gateway: GatewayProcess, key: str) -> None:
    key_b = gateway.create_key(account="vault-b")
    mine = [_create(gateway, key, "blueprints", BLUEPRINT, VAULT_KEY) for _ in range(2)]
    theirs = _create(gateway, key_b, "blueprints", BLUEPRINT, OTHER_KEY)
    moved = _create(gateway, key, "blueprints", BLUEPRINT, VAULT_KEY)
    sealed = _sealed(gateway)
    # Swap two items of one account, and put the other account's ciphertext in a third.
    swaps = {mine[0]: sealed[mine[1]], mine[1]: sealed[mine[0]], theirs: sealed[mine[0]]}
    for item_id, blob in swaps.items():
        gateway.sql("UPDATE vault_items SET sealed = :blob WHERE id = :id", blob=blob, id=item_id)
    # And move a whole row to the other account.
    [account_b] = gateway.sql("SELECT id FROM accounts WHERE name = 'vault-b'")
    gateway.sql(
        "UPDATE vault_items SET account_id = :account WHERE id = :id",
        account=account_b["id"],
        id=moved,
    )
    for api_key, vault_key, item_id in (
        (key, VAULT_KEY, mine[0]),
        (key, VAULT_KEY, mine[1]),
        (key_b, OTHER_KEY, theirs),
        (key_b, OTHER_KEY, moved),
    ):
        response = _request(gateway, api_key, "GET", f"/v1/blueprints/{item_id}", vault_key)
        assert (response.status_code, _code(response)) == (500, "SYSTEM_9002"), item_id
        with pytest.raises(openai.InternalServerError):
            _ask(sdk(gateway, api_key), vault_key, blueprint_id=item_id)
    for item_id in (*mine, theirs, moved):
        gateway.sql("DELETE FROM vault_items WHERE id = :id", id=item_id)


def test_rotation_reseals_every_item(gateway: GatewayProcess, scripted: ScriptedUpstream) -> None:
    api_key = gateway.create_key(account="vault-rotate")
    ids = [_create(gateway, api_key, "blueprints", BLUEPRINT, VAULT_KEY) for _ in range(3)]
    skill_id = _create(gateway, api_key, "skills", SKILL, VAULT_KEY)
    before = _sealed(gateway)
    new_key = "a brand new vault key 2026"
    response = post_vault(gateway, api_key, "/v1/vault/rotate", {"new_key": new_key}, VAULT_KEY)
    assert response.json() == {"object": "vault.rotation", "items": 4}, response.text
    after = _sealed(gateway)
    assert all(before[i] != after[i] for i in (*ids, skill_id))

    old = _request(gateway, api_key, "GET", f"/v1/blueprints/{ids[0]}", VAULT_KEY)
    assert (old.status_code, _code(old)) == (403, "AUTH_1031")
    for item_id in ids:
        item = _request(gateway, api_key, "GET", f"/v1/blueprints/{item_id}", new_key).json()
        assert item["config"]["system"] == BLUEPRINT["system"]
    response = _ask(
        sdk(gateway, api_key),
        new_key,
        blueprint_id=ids[0],
        skill_ids=[skill_id],
        variables={"company": "x"},
    )
    assert response.choices[0].finish_reason == "stop"
    again = post_vault(gateway, api_key, "/v1/vault/rotate", {"new_key": new_key}, VAULT_KEY)
    assert (again.status_code, _code(again)) == (403, "AUTH_1031")


def test_nothing_on_disk_or_in_logs_holds_plaintext_or_the_key(
    gateway: GatewayProcess, key: str
) -> None:
    _create(gateway, key, "blueprints", BLUEPRINT, VAULT_KEY)
    _create(gateway, key, "skills", SKILL, VAULT_KEY)
    secrets = [MARKER.encode(), VAULT_KEY.encode(), b"support-bot", b"get_weather"]
    stored = [*gateway.stored(), (gateway.log_path.name, gateway.log_path.read_bytes())]
    assert len(stored) > 1  # the database itself, not only the log
    for name, content in stored:
        for secret in secrets:
            assert secret not in content, (name, secret)


def _sealed(gateway: GatewayProcess) -> dict[str, bytes]:
    return {row["id"]: row["sealed"] for row in gateway.sql("SELECT id, sealed FROM vault_items")}
