"""Input railguards see every text that reaches a provider, normalised; and nothing from the vault
reaches the gateway's log or an error message, whatever fails.

A scripted upstream records what it was sent: a blocked request must reach it not at all, a
redacted one without the personal data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hanse.blueprints.normalise import normalise
from hanse.vault.sealing import KdfParams, Sealer
from tests.composition import EMBEDDED, UPSTREAM, post_vault, reset, start_gateway
from tests.harness import GatewayProcess
from tests.upstream import ScriptedUpstream

BLOCKED = "Blocked: that word is not allowed."
EMAIL = "bob.smith@example.com"
GUARD: dict[str, Any] = {
    "name": "guard",
    "model": UPSTREAM,
    "variables": {"customer": {"default": "someone"}},
    "system": "Customer: {{customer}}.",
    "railguards": {
        "input": [
            {"type": "deny_pattern", "pattern": "(?i)password", "message": BLOCKED},
            {"type": "pii", "kinds": ["email"]},
        ]
    },
}
# Every place a client's text can take; identifiers cannot take a placeholder.
TEXTS = {
    "system": "Be brief.",
    "system_name": "operator",
    "developer_part": "Answer in English.",
    "user": "Where is my parcel?",
    "user_name": "alice",
    "assistant_part": "Let me look.",
    "refusal_part": "I cannot share that.",
    "assistant_name": "helper",
    "refusal": "I will not do that.",
    "call_id": "call_1",
    "function_name": "track",
    "arguments": '{"parcel": "A1"}',
    "tool_call_id": "call_1",
    "tool_part": '{"status": "on its way"}',
    "assistant": "It is on its way.",
    "legacy_name": "locate",
    "legacy_arguments": '{"parcel": "A1"}',
    "function_name_result": "locate",
    "function_result": "Hamburg",
    "user_part": "Thanks, and when?",
}
IDENTIFIERS = {
    "system_name",
    "user_name",
    "assistant_name",
    "call_id",
    "function_name",
    "tool_call_id",
    "legacy_name",
    "function_name_result",
}
EVASIONS = {
    "zero_width_space": "pass\u200bword",
    "zero_width_joiner": "pa\u200dss\u200cword",
    "word_joiner": "pass\u2060word",
    "byte_order_mark": "pass\ufeffword",
    "soft_hyphen": "pass\u00adword",
    "full_width": "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44",
    "tag_characters": "pass\U000e0041word",
    "mixed": "P\u200b\uff41ss\u00ad\uff57ord",
}
VAULT_KEY = "guard-coverage vault key 0042"
SECRET = "Qx7SecretSkillMarker"  # each test adds its own suffix, so that one leak fails one test


def conversation(**texts: str) -> list[dict[str, Any]]:
    t = {**TEXTS, **texts}
    return [
        {"role": "system", "content": t["system"], "name": t["system_name"]},
        {"role": "developer", "content": [{"type": "text", "text": t["developer_part"]}]},
        {"role": "user", "content": t["user"], "name": t["user_name"]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": t["assistant_part"]},
                {"type": "refusal", "refusal": t["refusal_part"]},
            ],
            "name": t["assistant_name"],
            "refusal": t["refusal"],
            "tool_calls": [
                {
                    "id": t["call_id"],
                    "type": "function",
                    "function": {"name": t["function_name"], "arguments": t["arguments"]},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": t["tool_call_id"],
            "content": [{"type": "text", "text": t["tool_part"]}],
        },
        {
            "role": "assistant",
            "content": t["assistant"],
            "function_call": {"name": t["legacy_name"], "arguments": t["legacy_arguments"]},
        },
        {"role": "function", "name": t["function_name_result"], "content": t["function_result"]},
        {"role": "user", "content": [{"type": "text", "text": t["user_part"]}]},
    ]


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[GatewayProcess]:
    process = start_gateway(Path(tmp_path_factory.mktemp("guard-coverage")), upstream)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def key(gateway: GatewayProcess) -> str:
    return gateway.create_key(account="guard-coverage")


@pytest.fixture
def scripted(upstream: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    reset(upstream)
    yield upstream
    reset(upstream)


def _chat(
    gateway: GatewayProcess, key: str, vault_key: str | None = None, **body: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if vault_key is not None:
        headers["X-Vault-Key"] = vault_key
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers=headers,
        json={"max_tokens": 4, **body},
        timeout=120,
    )


def _guarded(gateway: GatewayProcess, key: str, **body: Any) -> dict[str, Any]:
    response = _chat(gateway, key, blueprint_config=GUARD, **body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _blocked(answer: dict[str, Any]) -> bool:
    choice = answer["choices"][0]
    return bool(choice["finish_reason"] == "blocked" and choice["message"]["content"] == BLOCKED)


def _sent(upstream: ScriptedUpstream) -> str:
    """Everything the provider received, as one JSON text."""
    assert len(upstream.requests) == 1, upstream.requests
    return json.dumps(upstream.requests[0].body["messages"], ensure_ascii=False)


def test_the_conversation_passes_unchanged(
    gateway: GatewayProcess, key: str, scripted: ScriptedUpstream
) -> None:
    answer = _guarded(gateway, key, messages=conversation())
    assert answer["choices"][0]["finish_reason"] == "stop"
    sent = _sent(scripted)
    for slot, text in TEXTS.items():
        if slot not in ("legacy_name", "function_name_result"):  # become a tool call's id
            assert json.dumps(text)[1:-1] in sent, slot


@pytest.mark.parametrize("slot", sorted(TEXTS))
def test_a_blocked_word_anywhere_blocks(
    gateway: GatewayProcess, key: str, scripted: ScriptedUpstream, slot: str
) -> None:
    text = "get_password" if slot in IDENTIFIERS else "My password is hunter2."
    answer = _guarded(gateway, key, messages=conversation(**{slot: text}))
    assert _blocked(answer), answer
    assert scripted.requests == []


@pytest.mark.parametrize("evasion", sorted(EVASIONS))
@pytest.mark.parametrize("slot", ["user", "arguments", "refusal", "tool_part", "user_name"])
def test_invisible_and_full_width_characters_do_not_hide_it(
    gateway: GatewayProcess, key: str, scripted: ScriptedUpstream, slot: str, evasion: str
) -> None:
    answer = _guarded(gateway, key, messages=conversation(**{slot: f"x{EVASIONS[evasion]}y"}))
    assert _blocked(answer), answer
    assert scripted.requests == []


def test_a_variable_value_is_read_normalised(
    gateway: GatewayProcess, key: str, scripted: ScriptedUpstream
) -> None:
    answer = _guarded(
        gateway, key, messages=conversation(), variables={"customer": EVASIONS["mixed"]}
    )
    assert _blocked(answer), answer
    assert scripted.requests == []


@pytest.mark.parametrize("slot", sorted(set(TEXTS) - IDENTIFIERS))
def test_personal_data_is_redacted_wherever_it_is(
    gateway: GatewayProcess, key: str, scripted: ScriptedUpstream, slot: str
) -> None:
    text = json.dumps({"mail": EMAIL}) if "arguments" in slot else f"Write to {EMAIL} now."
    answer = _guarded(gateway, key, messages=conversation(**{slot: text}))
    assert answer["choices"][0]["finish_reason"] == "stop", answer
    sent = _sent(scripted)
    assert EMAIL not in sent and "example.com" not in sent
    assert "[EMAIL]" in sent
    other = "user" if slot == "user_part" else "user_part"
    assert TEXTS[other] in sent  # the rest of the conversation is there


@pytest.mark.parametrize("slot", sorted(IDENTIFIERS))
def test_personal_data_in_an_identifier_blocks(
    gateway: GatewayProcess, key: str, scripted: ScriptedUpstream, slot: str
) -> None:
    answer = _guarded(gateway, key, messages=conversation(**{slot: EMAIL}))
    assert answer["choices"][0]["finish_reason"] == "blocked", answer
    assert scripted.requests == []


def test_untouched_text_goes_on_as_written_redacted_text_normalised(
    gateway: GatewayProcess, key: str, scripted: ScriptedUpstream
) -> None:
    kept = "Fine\u200b text in \uff26\uff55\uff4c\uff4c width, \U0001f468\u200d\U0001f469."
    redacted = "Mail \uff42\uff4f\uff42@example.com\u200b, \uff34\uff48\uff41\uff4e\uff4b\uff53."
    _guarded(
        gateway,
        key,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": kept},
                    {"type": "text", "text": redacted},
                ],
            }
        ],
    )
    content = scripted.requests[0].body["messages"][-1]["content"]
    texts = [part["text"] for part in content] if isinstance(content, list) else [content]
    sent = "".join(texts)
    assert kept in sent
    assert "Mail [EMAIL], Thanks." in sent
    assert normalise(redacted) == "Mail bob@example.com, Thanks."


# Nothing from the vault in the log or an error message.


def _skill(gateway: GatewayProcess, key: str, skill: dict[str, Any]) -> str:
    response = post_vault(gateway, key, "/v1/skills", skill, VAULT_KEY)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _secret_skill(
    secret: str, name: str, parameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name, "description": f"{secret} tool"}
    if parameters is not None:
        function["parameters"] = parameters
    return {
        "name": f"{secret}-skill",
        "description": f"{secret} description",
        "instructions": f"{secret} instructions",
        "tools": [{"type": "function", "function": function}],
    }


def test_a_skill_whose_tool_clashes_leaks_nothing(
    gateway: GatewayProcess, key: str, scripted: ScriptedUpstream
) -> None:
    secret = SECRET + "Clash"
    skill_id = _skill(gateway, key, _secret_skill(secret, f"{secret}_tool"))
    tools = [{"type": "function", "function": {"name": f"{secret}_tool"}}]
    response = _chat(
        gateway,
        key,
        VAULT_KEY,
        model=UPSTREAM,
        messages=[{"role": "user", "content": "hi"}],
        skill_ids=[skill_id],
        tools=tools,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("VALIDATION_4005", "skill_ids[0]")
    assert secret not in response.text
    assert secret not in gateway.log()
    assert scripted.requests == []


def test_a_stored_skill_that_no_longer_passes_leaks_nothing(
    gateway: GatewayProcess, key: str, scripted: ScriptedUpstream
) -> None:
    """A sealed item the current rules refuse (here: an unknown field named after a secret)."""
    secret = SECRET + "Stale"
    skill_id = _skill(gateway, key, {"name": "plain"})
    row = gateway.sql("SELECT account_id FROM vault_items WHERE id = :id", id=skill_id)[0]
    account_id = int(row["account_id"])
    vault = gateway.sql("SELECT * FROM vaults WHERE account_id = :a", a=account_id)[0]
    params = KdfParams(n=vault["kdf_n"], r=vault["kdf_r"], p=vault["kdf_p"], salt=vault["salt"])
    sealer = Sealer.derive(account_id, VAULT_KEY, params)
    stale = json.dumps({"name": "plain", secret: f"{secret} value"}).encode()
    gateway.sql(
        "UPDATE vault_items SET sealed = :s WHERE id = :id",
        s=sealer.seal("skill", skill_id, stale),
        id=skill_id,
    )
    response = _chat(
        gateway,
        key,
        VAULT_KEY,
        model=UPSTREAM,
        messages=[{"role": "user", "content": "hi"}],
        skill_ids=[skill_id],
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("VALIDATION_4005", "skill_ids[0]")
    assert skill_id in error["message"]
    assert secret not in response.text
    assert secret not in gateway.log()
    assert scripted.requests == []


def test_vault_keys_are_never_logged(gateway: GatewayProcess, key: str) -> None:
    wrong = "a-wrong-vault-key-Zq81"
    for vault_key in (VAULT_KEY, wrong):
        httpx.get(
            f"{gateway.base_url}/v1/skills",
            headers={"Authorization": f"Bearer {key}", "X-Vault-Key": vault_key},
            timeout=60,
        )
    log = gateway.log()
    assert VAULT_KEY not in log and wrong not in log


EMBEDDED_REFUSALS = {
    # llama.cpp refuses the grammar and prints it (property names included) to stderr.
    "quote_in_a_property_name": {"type": "object", "properties": {'{secret}"x': {}}},
    # The converter's own message quotes the pattern.
    "unconvertible_pattern": {
        "type": "object",
        "properties": {"a": {"type": "string", "pattern": "^{secret}[\\]$"}},
    },
}


@pytest.mark.parametrize("case", sorted(EMBEDDED_REFUSALS))
def test_a_skill_schema_the_embedded_model_refuses_leaks_nothing(
    gateway: GatewayProcess, key: str, case: str
) -> None:
    secret = SECRET + "".join(word.title() for word in case.split("_"))
    schema = json.loads(json.dumps(EMBEDDED_REFUSALS[case]).replace("{secret}", secret))
    skill_id = _skill(gateway, key, _secret_skill(secret, "lookup", schema))
    response = _chat(
        gateway,
        key,
        VAULT_KEY,
        model=EMBEDDED,
        messages=[{"role": "user", "content": "hi"}],
        skill_ids=[skill_id],
        tool_choice="required",
    )
    assert response.status_code == 400, response.text
    assert secret not in response.text
    assert secret not in gateway.log()
