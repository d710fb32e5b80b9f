"""Shared by the blueprint, railguard and vault tests: a gateway with the embedded model and a
scripted upstream, schema checks that know Melious's two extra finish reasons, the ledger."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

from tests.harness import GatewayProcess, assert_schema
from tests.upstream import ScriptedUpstream

MELIOUS_FINISH = ("blocked", "blueprint_override")
EMBEDDED = "smollm2-135m"
UPSTREAM = "scripted"  # a model served by the scripted upstream, which records what it was sent


def catalog(upstream_url: str) -> str:
    return f"""
[[providers]]
id = "hanse-local"
kind = "local"

[[providers]]
id = "up"
kind = "openai_compatible"
base_url = "{upstream_url}"
connect_timeout_s = 2
read_timeout_s = 10

[[models]]
id = "{EMBEDDED}"
context_length = 8192
capabilities = {{ function_calling = true, structured_output = true, json_schema = true }}
parameters_billion = {{ active = 0.135, total = 0.135 }}
  [[models.routes]]
  provider = "hanse-local"

[[models]]
id = "{UPSTREAM}"
context_length = 8192
capabilities = {{ function_calling = true }}
  [[models.routes]]
  provider = "up"
  upstream_model = "ok"
"""


def start_gateway(workdir: Path, upstream: ScriptedUpstream) -> GatewayProcess:
    """A gateway with both models; scrypt at n=2**14 keeps the tests quick."""
    env = {"HANSE_VAULT_SCRYPT_N": "16384"}
    return GatewayProcess(workdir, catalog(upstream.base_url), env=env).start()


def reset(upstream: ScriptedUpstream) -> None:
    upstream.clear()
    upstream.pieces = None
    upstream.behaviour = None


def sdk(gateway: GatewayProcess, key: str) -> OpenAI:
    return OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0, timeout=120)


def assert_completion(body: dict[str, Any]) -> None:
    """The official schema, with `blocked` / `blueprint_override` standing in for `stop`."""
    assert_schema("CreateChatCompletionResponse", _as_openai(body))


def assert_chunk(chunk: dict[str, Any]) -> None:
    assert_schema("CreateChatCompletionStreamResponse", _as_openai(chunk))


def _as_openai(body: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    for choice in body.get("choices", []):
        if choice.get("finish_reason") in MELIOUS_FINISH:
            choice["finish_reason"] = "stop"
    return body


def ledger(gateway: GatewayProcess, request_id: str) -> dict[str, Any]:
    rows = gateway.sql("SELECT * FROM ledger WHERE request_id = :id", id=request_id)
    assert rows, f"no ledger row for {request_id}"
    return rows[0]


def post_vault(
    gateway: GatewayProcess, key: str, path: str, body: Any, vault_key: str | None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if vault_key is not None:
        headers["X-Vault-Key"] = vault_key
    return httpx.post(f"{gateway.base_url}{path}", json=body, headers=headers, timeout=60)
