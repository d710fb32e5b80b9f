"""schemathesis over the admin, usage and vault operations of /openapi.json, negative cases included:
no 5xx, every malformed request refused with a 4xx, every answer as the document says.

Its own gateway, with the admin API on and a cheap vault key derivation (the vault's own tests use
the real one); the admin operations are called with the admin token, the others with an API key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection

from tests.harness import GatewayProcess
from tests.test_openapi import CHECKS, fuzz

ADMIN = "admin-token-openapi-0123456789"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"HANSE_ADMIN_TOKEN": ADMIN, "HANSE_VAULT_SCRYPT_N": "1024"}
    process = GatewayProcess(Path(tmp_path_factory.mktemp("openapi-admin")), env=env).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def schema(gateway: GatewayProcess) -> Any:
    assert gateway.base_url.startswith("http://127.0.0.1:")  # never anywhere else
    document = httpx.get(f"{gateway.base_url}/openapi.json", timeout=30).json()
    return schemathesis.openapi.from_dict(document)


OPERATIONS = [
    ("/admin/keys", "POST"),
    ("/admin/keys", "GET"),
    ("/admin/keys/{key_id}", "DELETE"),
    ("/admin/accounts", "POST"),
    ("/admin/accounts/{name}", "GET"),
    ("/admin/accounts/{name}", "PATCH"),
    ("/admin/accounts/{name}/topup", "POST"),
    ("/v1/usage", "GET"),
    ("/v1/blueprints", "POST"),
    ("/v1/blueprints", "GET"),
    ("/v1/blueprints/{item_id}", "GET"),
    ("/v1/blueprints/{item_id}", "PUT"),
    ("/v1/blueprints/{item_id}", "DELETE"),
    ("/v1/skills", "POST"),
    ("/v1/skills/{item_id}", "PUT"),
    ("/v1/vault/rotate", "POST"),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_schemathesis(
    gateway: GatewayProcess, api_key: str, schema: Any, path: str, method: str, mode: GenerationMode
) -> None:
    operation = schema[path][method]
    checks = CHECKS if mode is GenerationMode.POSITIVE else [*CHECKS, negative_data_rejection]
    key = ADMIN if path.startswith("/admin") else api_key
    fuzz(operation.as_strategy(generation_mode=mode), 12, None, checks)(gateway.base_url, key)


def test_no_fuzzed_request_ended_in_a_server_error(gateway: GatewayProcess) -> None:
    """Runs last: the gateway logged no 500 and no traceback for anything schemathesis sent."""
    log = gateway.log()
    assert '"status":500' not in log.replace(" ", "")
    assert "Traceback" not in log
