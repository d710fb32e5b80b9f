"""Balances under concurrency (SQLite and PostgreSQL), and holds left by a crashed process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import GatewayProcess, create_postgres_database
from tests.upstream import USAGE, ScriptedUpstream

ADMIN = "race-admin-token"
PRICE_IN = Decimal("50")  # EUR per million input tokens; output is free, so cost == worst case
CONFIG = f"""
[[providers]]
id = "hanse-local"
kind = "local"

[[models]]
id = "smollm2-135m"
context_length = 8192
parameters_billion = {{ active = 0.135, total = 0.135 }}
  [[models.routes]]
  provider = "hanse-local"
  input_eur_per_million = "{PRICE_IN}"
  output_eur_per_million = "0"
"""
PROMPT = [{"role": "user", "content": "Count from one to ten."}]
K = 5
# An upstream whose answers cost more than their hold: it reports USAGE whatever max_tokens says.
OVERSHOOT = """
[[providers]]
id = "up"
kind = "openai_compatible"
base_url = "{base_url}"

[[models]]
id = "overshoot"
context_length = 8192
  [[models.routes]]
  provider = "up"
  upstream_model = "ok"
  input_eur_per_million = "0"
  output_eur_per_million = "1"
"""
PICO_PER_OUTPUT_TOKEN = 10**6


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    upstream: ScriptedUpstream,
) -> Iterator[GatewayProcess]:
    workdir = Path(tmp_path_factory.mktemp(request.param))
    env = {"HANSE_ADMIN_TOKEN": ADMIN}
    if request.param == "postgresql":
        env["HANSE_DATABASE_URL"] = create_postgres_database()
    else:  # SQLite even in the PostgreSQL lane of CI: this test is about both engines
        env["HANSE_DATABASE_URL"] = f"sqlite:///{workdir / 'data' / 'hanse.db'}"
    config = CONFIG + OVERSHOOT.format(base_url=upstream.base_url)
    process = GatewayProcess(workdir, config, env=env).start()
    yield process
    process.stop()


def _admin(gateway: GatewayProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    return httpx.request(method, f"{gateway.base_url}/admin{path}", headers=headers, **kwargs)


def _credits(gateway: GatewayProcess, name: str) -> Decimal:
    return Decimal(_admin(gateway, "GET", f"/accounts/{name}").json()["balances"]["credits"])


def _ask(gateway: GatewayProcess, key: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "smollm2-135m", "messages": PROMPT, "max_tokens": 2, "temperature": 0},
        timeout=120,
    )


def test_exactly_the_affordable_requests_succeed(gateway: GatewayProcess) -> None:
    # What one request costs: its prompt tokens at the input price (the embedded model counts exactly).
    _admin(gateway, "POST", "/accounts", json={"name": "probe", "plan": "credits_only"})
    _admin(gateway, "POST", "/accounts/probe/topup", json={"credits": "1"})
    probe = _ask(gateway, gateway.create_key(account="probe")).json()
    worst = probe["usage"]["prompt_tokens"] * PRICE_IN / 10**6
    assert Decimal(probe["billing_cost"]["credits"]) == worst

    _admin(gateway, "POST", "/accounts", json={"name": "race", "plan": "credits_only"})
    _admin(gateway, "POST", "/accounts/race/topup", json={"credits": str(worst * K)})
    key = gateway.create_key(account="race")

    async def storm() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            calls = [
                client.post(
                    f"{gateway.base_url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": "smollm2-135m", "messages": PROMPT, "max_tokens": 2},
                )
                for _ in range(4 * K)
            ]
            return await asyncio.gather(*calls)

    responses = asyncio.run(storm())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * K + [402] * (3 * K)
    refused = [r.json()["error"] for r in responses if r.status_code == 402]
    assert {e["code"] for e in refused} == {"BILLING_2003"}
    charged = sum(
        Decimal(r.json()["billing_cost"]["credits"]) for r in responses if r.status_code == 200
    )
    assert charged == worst * K
    assert _credits(gateway, "race") == 0
    usage = httpx.get(
        f"{gateway.base_url}/v1/usage", headers={"Authorization": f"Bearer {key}"}
    ).json()
    assert usage["totals"]["requests"] == K
    assert Decimal(usage["totals"]["cost"]["credits"]) == worst * K


def test_costs_above_their_holds_never_overspend(gateway: GatewayProcess) -> None:
    # Each answer holds one output token (max_tokens 1) but reports USAGE: settlement charges the
    # exact cost, the hold plus what the balance still has, and records what it could not pay.
    cost = USAGE["completion_tokens"] * PICO_PER_OUTPUT_TOKEN
    funded = 3 * cost + cost // 2  # three answers and a half
    _admin(gateway, "POST", "/accounts", json={"name": "over", "plan": "credits_only"})
    _admin(gateway, "POST", "/accounts/over/topup", json={"credits": str(Decimal(funded) / 10**12)})
    key = gateway.create_key(account="over")

    async def storm() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            calls = [
                client.post(
                    f"{gateway.base_url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={
                        "model": "overshoot",
                        "messages": PROMPT,
                        "max_tokens": 1,
                        "request_id": f"over-{i}",
                    },
                )
                for i in range(4 * K)
            ]
            return await asyncio.gather(*calls)

    responses = asyncio.run(storm())
    answered = [r for r in responses if r.status_code == 200]
    assert {r.status_code for r in responses} <= {200, 402}
    assert len(answered) >= 4  # the funds cover three answers and a half, and holds are small
    charged = sum(Decimal(r.json()["billing_cost"]["credits"]) * 10**12 for r in answered)
    assert charged == funded  # every pico-euro, and not one more
    [account] = gateway.sql("SELECT credits_pico FROM accounts WHERE name = 'over'")
    assert account["credits_pico"] == 0
    rows = gateway.sql(
        "SELECT status, cost_pico, unpaid_pico FROM ledger WHERE request_id LIKE 'over-%'"
    )
    assert len(rows) == len(answered)
    assert all(row["cost_pico"] + row["unpaid_pico"] == cost for row in rows)
    assert sum(row["cost_pico"] for row in rows) == funded
    assert "unpaid" in {row["status"] for row in rows} <= {"ok", "unpaid"}
    assert sum(row["unpaid_pico"] for row in rows) == len(answered) * cost - funded
    assert gateway.sql("SELECT count(*) AS n FROM reservations")[0]["n"] == 0


def test_crash_mid_stream_releases_the_hold_once(tmp_path: Path) -> None:
    env = {
        "HANSE_ADMIN_TOKEN": ADMIN,
        "HANSE_RESERVATION_TTL_S": "5",
        "HANSE_SWEEP_INTERVAL_S": "0.5",
    }
    config = CONFIG.replace('output_eur_per_million = "0"', 'output_eur_per_million = "1"')
    first = GatewayProcess(tmp_path, config, env=env).start()
    _admin(first, "POST", "/accounts", json={"name": "crashy", "plan": "credits_only"})
    _admin(first, "POST", "/accounts/crashy/topup", json={"credits": "1"})
    key = first.create_key(account="crashy")
    try:
        with httpx.stream(
            "POST",
            f"{first.base_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": "smollm2-135m",
                "messages": [{"role": "user", "content": "Write a very long essay about the sea."}],
                "max_tokens": 4000,
                "stream": True,
            },
            timeout=60,
        ) as response:
            lines = response.iter_lines()
            next(lines)
            next(lines)
            assert _credits(first, "crashy") < 1  # the worst case is held
            first.kill()  # no settlement can run: the hold stays in the database
    finally:
        first.kill()
    second = GatewayProcess(tmp_path, config, env={**env, "HANSE_DATABASE_URL": first.database_url})
    second.start()
    try:
        deadline = time.monotonic() + 20
        while _credits(second, "crashy") != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _credits(second, "crashy") == 1
        time.sleep(1.5)  # more sweeps: nothing is released twice
        assert _credits(second, "crashy") == 1
        usage = httpx.get(
            f"{second.base_url}/v1/usage", headers={"Authorization": f"Bearer {key}"}
        ).json()
        assert usage["totals"]["requests"] == 1
        assert usage["totals"]["cost"]["credits"] == "0.0"
    finally:
        second.stop()
