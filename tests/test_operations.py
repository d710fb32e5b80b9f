"""Operating the gateway: liveness and readiness, draining on SIGTERM, structured logs."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import GatewayProcess, create_postgres_database, drop_postgres_database
from tests.upstream import ScriptedUpstream

ADMIN = "operations-admin"


def catalog(base_url: str) -> str:
    return f"""
[[providers]]
id = "up"
kind = "openai_compatible"
base_url = "{base_url}"

[[models]]
id = "long"
context_length = 4096
  [[models.routes]]
  provider = "up"
  upstream_model = "drip-100"
  output_eur_per_million = "1"
"""


def start(workdir: Path, upstream: ScriptedUpstream, **env: str) -> GatewayProcess:
    return GatewayProcess(
        workdir, catalog(upstream.base_url), env={"HANSE_ADMIN_TOKEN": ADMIN, **env}
    ).start()


def funded_key(gateway: GatewayProcess, name: str) -> str:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    base = f"{gateway.base_url}/admin"
    httpx.post(f"{base}/accounts", headers=headers, json={"name": name, "plan": "credits_only"})
    httpx.post(f"{base}/accounts/{name}/topup", headers=headers, json={"credits": "1"})
    return gateway.create_key(account=name)


def stream_body() -> dict[str, Any]:
    """A streamed request; the upstream's `pieces` set its length."""
    return {
        "model": "long",
        "messages": [{"role": "user", "content": "Tell me about the Hanse."}],
        "max_tokens": 500,
        "stream": True,
    }


def test_health_and_ready(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    gateway = start(tmp_path, upstream)
    try:
        assert httpx.get(f"{gateway.base_url}/health").json() == {"status": "ok"}
        ready = httpx.get(f"{gateway.base_url}/ready")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        checks = ready.json()["checks"]
        assert {"providers", "database"} <= set(checks) and set(checks.values()) == {"ok"}
    finally:
        gateway.stop()


def test_ready_fails_when_the_database_goes_away(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    url = create_postgres_database()
    gateway = start(tmp_path, upstream, HANSE_DATABASE_URL=url)
    try:
        assert httpx.get(f"{gateway.base_url}/ready").status_code == 200
        drop_postgres_database(url)  # every connection of the gateway is cut
        ready = httpx.get(f"{gateway.base_url}/ready")
        assert ready.status_code == 503
        error = ready.json()["error"]
        assert error["code"] == "SYSTEM_9004"
        assert error["details"]["checks"]["database"].startswith("unreachable")
        assert httpx.get(f"{gateway.base_url}/health").status_code == 200  # alive, not ready
    finally:
        gateway.stop()


def _terminate_mid_stream(
    gateway: GatewayProcess, key: str, upstream: ScriptedUpstream, pieces: int
) -> list[str]:
    """Start a stream of `pieces` chunks 100 ms apart, SIGTERM the gateway after its first
    chunks; check that it takes no new connection; return every line the stream delivered."""
    upstream.pieces = ["word "] * pieces
    assert gateway.process is not None
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json=stream_body(),
        timeout=30,
    ) as response:
        lines = response.iter_lines()
        received = [next(lines), next(lines)]
        gateway.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # the listening socket closes within a moment
            try:
                httpx.get(f"{gateway.base_url}/health", timeout=0.5)
            except (httpx.ConnectError, httpx.RemoteProtocolError):
                break  # refused, or accepted from the backlog and closed unanswered
            time.sleep(0.05)
        else:
            pytest.fail("the gateway still accepts connections after SIGTERM")
        with contextlib.suppress(httpx.RemoteProtocolError):  # a cut body lacks its last chunk
            received += list(lines)
    return received


def exit_status(gateway: GatewayProcess) -> int:
    """How the process ended; uvicorn re-raises SIGTERM once drained, so a clean stop reads as
    killed by SIGTERM, which is what supervisors expect of a service."""
    assert gateway.process is not None
    return gateway.process.wait(timeout=15)


def test_sigterm_lets_a_stream_in_flight_finish(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    gateway = start(tmp_path, upstream)
    try:
        key = funded_key(gateway, "drained")
        lines = _terminate_mid_stream(gateway, key, upstream, pieces=15)
        events = [line for line in lines if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        final = json.loads(events[-2][len("data: ") :])
        assert "billing_cost" in final
        assert exit_status(gateway) == -signal.SIGTERM
    finally:
        upstream.pieces = None
        gateway.stop()
    assert [row["status"] for row in gateway.sql("SELECT status FROM ledger")] == ["ok"]
    assert gateway.sql("SELECT id FROM reservations") == []


def test_sigterm_cuts_streams_past_the_timeout_and_settles_them(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    gateway = start(tmp_path, upstream, HANSE_SHUTDOWN_TIMEOUT_S="1")
    try:
        key = funded_key(gateway, "cut")
        started = time.monotonic()
        lines = _terminate_mid_stream(gateway, key, upstream, pieces=100)  # 10 s of stream
        assert "data: [DONE]" not in lines
        assert exit_status(gateway) == -signal.SIGTERM
        assert time.monotonic() - started < 8
    finally:
        upstream.pieces = None
        gateway.stop()
    [row] = gateway.sql("SELECT status, cost_pico FROM ledger")
    assert row["status"] == "cancelled" and row["cost_pico"] > 0  # what was delivered
    assert gateway.sql("SELECT id FROM reservations") == []
    [account] = gateway.sql("SELECT credits_pico FROM accounts WHERE name = 'cut'")
    assert Decimal(account["credits_pico"]) == 10**12 - row["cost_pico"]


def test_request_logs_are_json_lines_without_keys(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    gateway = start(tmp_path, upstream)
    try:
        key = funded_key(gateway, "logged")
        upstream.pieces = ["word "] * 2
        response = httpx.post(
            f"{gateway.base_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={**stream_body(), "stream": False},
        )
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
    finally:
        upstream.pieces = None
        gateway.stop()
    log = gateway.log()
    assert key not in log and key[-32:] not in log
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    [entry] = [
        e for e in entries if e.get("msg") == "request" and e.get("request_id") == request_id
    ]
    assert entry["path"] == "/v1/chat/completions" and entry["status"] == 200
    assert entry["account"] == "logged" and isinstance(entry["account_id"], int)
    assert entry["route"] == "up" and entry["key_id"].startswith("key_")
    assert entry["latency_ms"] >= entry["overhead_ms"] >= 0
