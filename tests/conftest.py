"""Shared fixtures: one embedded-model gateway, and one scripted upstream, per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI, OpenAI

from tests.harness import GatewayProcess, clear_redis_test_keys, drop_postgres_databases
from tests.upstream import ScriptedUpstream


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(Path(tmp_path_factory.mktemp("gateway"))).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    """A scripted OpenAI-shaped upstream on 127.0.0.1 that records what it received."""
    server = ScriptedUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_key(gateway: GatewayProcess) -> str:
    return gateway.create_key()


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess, api_key: str) -> OpenAI:
    return OpenAI(base_url=f"{gateway.base_url}/v1", api_key=api_key, max_retries=0, timeout=120)


@pytest.fixture
def aclient(gateway: GatewayProcess, api_key: str) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=f"{gateway.base_url}/v1", api_key=api_key, max_retries=0, timeout=120
    )


@pytest.fixture(scope="session", autouse=True)
def _clean_shared_state() -> Iterator[None]:
    """PostgreSQL databases and Redis keys of the run go away at its end."""
    yield
    drop_postgres_databases()
    clear_redis_test_keys()
