"""environment_impact and billing_cost on every answer, charged once against the right balance."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from hanse.grid import grid_mix
from tests.harness import GatewayProcess, assert_schema, free_port, sse_events

ADMIN = "metering-admin-token"
PRICE_IN, PRICE_OUT = Decimal("2"), Decimal("3")  # EUR per million tokens
MEASURED_KWH_PER_TOKEN = 2e-6
PUE, WUE = 1.1, 0.2
HELLO = [{"role": "user", "content": "Name three Hanseatic cities."}]

CONFIG = f"""
[[providers]]
id = "hanse-local"
kind = "local"
location = "FR"
pue = {PUE}
wue = {WUE}
renewable_percent = 70

[[providers]]
id = "dead"
kind = "openai_compatible"
base_url = "http://127.0.0.1:{free_port()}/v1"
connect_timeout_s = 1

[[models]]
id = "smollm2-135m"
context_length = 8192
capabilities = {{ function_calling = true, structured_output = true, json_schema = true }}
parameters_billion = {{ active = 0.135, total = 0.135 }}
  [[models.routes]]
  provider = "hanse-local"
  input_eur_per_million = "{PRICE_IN}"
  output_eur_per_million = "{PRICE_OUT}"

[[models]]
id = "smollm2-measured"
context_length = 8192
  [[models.routes]]
  provider = "hanse-local"
  energy_kwh_per_token = {MEASURED_KWH_PER_TOKEN}

[[models]]
id = "broken"
context_length = 8192
parameters_billion = {{ active = 8, total = 8 }}
  [[models.routes]]
  provider = "dead"
  input_eur_per_million = "1"
  output_eur_per_million = "1"
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        Path(tmp_path_factory.mktemp("metering")), CONFIG, env={"HANSE_ADMIN_TOKEN": ADMIN}
    ).start()
    yield process
    process.stop()


def _admin(gateway: GatewayProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method,
        f"{gateway.base_url}/admin{path}",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
        **kwargs,
    )


def _account(gateway: GatewayProcess, name: str, plan: str, credits: str, energy: str) -> str:
    """A fresh account with these balances, and a key for it."""
    assert (
        _admin(gateway, "POST", "/accounts", json={"name": name, "plan": plan}).status_code == 201
    )
    topped = _admin(
        gateway, "POST", f"/accounts/{name}/topup", json={"credits": credits, "energy": energy}
    )
    assert topped.status_code == 200, topped.text
    return gateway.create_key(account=name)


def _balances(gateway: GatewayProcess, name: str) -> dict[str, Decimal]:
    body = _admin(gateway, "GET", f"/accounts/{name}").json()
    return {k: Decimal(v) for k, v in body["balances"].items()}


def _client(gateway: GatewayProcess, key: str) -> OpenAI:
    return OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0, timeout=120)


def _usage(gateway: GatewayProcess, key: str, **params: str) -> dict[str, Any]:
    response = httpx.get(
        f"{gateway.base_url}/v1/usage", headers={"Authorization": f"Bearer {key}"}, params=params
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _price(prompt_tokens: int, completion_tokens: int) -> Decimal:
    return (prompt_tokens * PRICE_IN + completion_tokens * PRICE_OUT) / 10**6


def _assert_impact(impact: dict[str, Any]) -> None:
    assert set(impact) == {
        "energy_kwh",
        "carbon_g_co2",
        "water_liters",
        "renewable_percent",
        "pue",
        "provider_id",
        "location",
    }
    assert impact["provider_id"] == "hanse-local"
    assert impact["location"] == "FR"
    assert impact["pue"] == PUE
    assert impact["renewable_percent"] == 70
    mix = grid_mix("FR")
    assert impact["energy_kwh"] > 0
    assert impact["carbon_g_co2"] == pytest.approx(
        impact["energy_kwh"] * mix.carbon_g_per_kwh, rel=1e-4
    )
    water = impact["energy_kwh"] / PUE * (WUE + PUE * mix.water_l_per_kwh)
    assert impact["water_liters"] == pytest.approx(water, rel=1e-4)


def test_answer_carries_both_objects_and_reconciles(gateway: GatewayProcess) -> None:
    key = _account(gateway, "answers", "energy_then_credits", credits="0", energy="5")
    raw = _client(gateway, key).chat.completions.with_raw_response.create(
        model="smollm2-135m", messages=HELLO, max_tokens=6
    )
    assert_schema("CreateChatCompletionResponse", json.loads(raw.text))
    completion = raw.parse()
    extra = completion.model_extra or {}
    _assert_impact(extra["environment_impact"])
    cost = extra["billing_cost"]
    assert cost["paid_with"] == "energy"
    assert cost["credits"] == "0.0"
    assert completion.usage is not None
    expected = _price(completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert Decimal(cost["energy"]) == expected
    assert _balances(gateway, "answers") == {"energy": Decimal(5) - expected, "credits": Decimal(0)}
    usage = _usage(gateway, key)
    assert Decimal(usage["totals"]["cost"]["energy"]) == expected
    assert usage["totals"]["requests"] == 1
    assert usage["totals"]["energy_kwh"] == pytest.approx(extra["environment_impact"]["energy_kwh"])


@pytest.mark.parametrize("include_usage", [True, False])
def test_final_stream_chunk_carries_both(gateway: GatewayProcess, include_usage: bool) -> None:
    name = f"streams-{include_usage}"
    key = _account(gateway, name, "credits_only", credits="1", energy="0")
    response = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "smollm2-135m",
            "messages": HELLO,
            "max_tokens": 5,
            "stream": True,
            **({"stream_options": {"include_usage": True}} if include_usage else {}),
        },
        timeout=60,
    )
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
    final = chunks[-1]
    assert all("billing_cost" not in c for c in chunks[:-1])
    _assert_impact(final["environment_impact"])
    assert final["billing_cost"]["paid_with"] == "credits"
    if include_usage:
        assert final["choices"] == []
        usage = final["usage"]
        charged = _price(usage["prompt_tokens"], usage["completion_tokens"])
        assert Decimal(final["billing_cost"]["credits"]) == charged
    else:
        assert final["choices"][0]["finish_reason"] in ("stop", "length")
        charged = Decimal(final["billing_cost"]["credits"])
    assert _balances(gateway, name)["credits"] == Decimal(1) - charged


def test_measured_energy_per_token(gateway: GatewayProcess) -> None:
    key = _account(gateway, "measured", "energy_then_credits", credits="0", energy="0")
    completion = _client(gateway, key).chat.completions.create(
        model="smollm2-measured", messages=HELLO, max_tokens=4
    )
    impact = (completion.model_extra or {})["environment_impact"]
    assert completion.usage is not None
    tokens = completion.usage.total_tokens
    assert impact["energy_kwh"] == pytest.approx(tokens * MEASURED_KWH_PER_TOKEN * PUE, rel=1e-5)
    _assert_impact(impact)
    # A free route costs nothing, and says which balance would have paid.
    assert (completion.model_extra or {})["billing_cost"] == {
        "energy": "0.0",
        "credits": "0.0",
        "paid_with": "energy",
    }


@pytest.mark.parametrize(
    ("plan", "credits", "energy", "code"),
    [
        ("credits_only", "0", "10", "BILLING_2003"),
        ("energy_only", "10", "0", "BILLING_2001"),
        ("energy_then_credits", "0", "0", "BILLING_2003"),
    ],
)
def test_out_of_balance(
    gateway: GatewayProcess, plan: str, credits: str, energy: str, code: str
) -> None:
    name = f"broke-{plan}"
    key = _account(gateway, name, plan, credits=credits, energy=energy)
    before = _balances(gateway, name)
    with pytest.raises(openai.APIStatusError) as caught:
        _client(gateway, key).chat.completions.create(
            model="smollm2-135m", messages=HELLO, max_tokens=8
        )
    assert caught.value.status_code == 402
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == code
    assert set(body["details"]) >= {"required", "energy_balance", "credits_balance", "plan"}
    assert Decimal(body["details"]["required"]) > 0
    assert _balances(gateway, name) == before
    assert _usage(gateway, key)["totals"]["requests"] == 0


def test_energy_first_then_credits(gateway: GatewayProcess) -> None:
    # 0.00001 energy covers no worst case (max_tokens 8 alone costs 0.000024): credits pay.
    key = _account(gateway, "fallback", "energy_then_credits", credits="1", energy="0.00001")
    completion = _client(gateway, key).chat.completions.create(
        model="smollm2-135m", messages=HELLO, max_tokens=8
    )
    cost = (completion.model_extra or {})["billing_cost"]
    assert cost["paid_with"] == "credits"
    assert cost["energy"] == "0.0"
    balances = _balances(gateway, "fallback")
    assert balances["energy"] == Decimal("0.00001")
    assert balances["credits"] == Decimal(1) - Decimal(cost["credits"])


def test_failed_everywhere_costs_nothing(gateway: GatewayProcess) -> None:
    key = _account(gateway, "unlucky", "credits_only", credits="1", energy="0")
    with pytest.raises(openai.APIStatusError) as caught:
        _client(gateway, key).chat.completions.create(model="broken", messages=HELLO, max_tokens=8)
    assert caught.value.status_code == 502
    assert _balances(gateway, "unlucky")["credits"] == Decimal(1)
    usage = _usage(gateway, key)
    assert usage["totals"]["requests"] == 1
    assert usage["totals"]["cost"] == {"energy": "0.0", "credits": "0.0", "unpaid": "0.0"}


def test_disconnect_mid_stream_costs_what_was_delivered(gateway: GatewayProcess) -> None:
    key = _account(gateway, "quitter", "credits_only", credits="1", energy="0")
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": "Write a very long essay about the sea."}],
            "max_tokens": 3000,
            "temperature": 0,
            "stream": True,
        },
        timeout=60,
    ) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(8)]
    delivered = sum(1 for line in received if '"content"' in line and '"role"' not in line)
    usage: dict[str, Any] = {}
    for _ in range(50):
        usage = _usage(gateway, key)
        if usage["totals"]["requests"]:
            break
        time.sleep(0.1)
    totals = usage["totals"]
    assert totals["requests"] == 1
    assert totals["completion_tokens"] >= delivered > 0
    assert totals["completion_tokens"] < 3000
    charged = Decimal(totals["cost"]["credits"])
    assert charged == _price(totals["prompt_tokens"], totals["completion_tokens"])
    assert _balances(gateway, "quitter")["credits"] == Decimal(1) - charged


def test_usage_filters_by_model_and_time(gateway: GatewayProcess) -> None:
    key = _account(gateway, "reader", "energy_then_credits", credits="0", energy="1")
    client = _client(gateway, key)
    client.chat.completions.create(model="smollm2-135m", messages=HELLO, max_tokens=2)
    client.chat.completions.create(model="smollm2-measured:eco", messages=HELLO, max_tokens=2)
    everything = _usage(gateway, key)
    assert [row["model"] for row in everything["data"]] == ["smollm2-135m", "smollm2-measured"]
    assert _usage(gateway, key, model="smollm2-measured")["totals"]["requests"] == 1
    assert _usage(gateway, key, end="2000-01-01T00:00:00Z")["totals"]["requests"] == 0
    assert _usage(gateway, key, start=str(int(time.time()) + 3600))["totals"]["requests"] == 0
    bad = httpx.get(
        f"{gateway.base_url}/v1/usage",
        headers={"Authorization": f"Bearer {key}"},
        params={"start": "yesterday"},
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "VALIDATION_4005"
    printed = gateway.cli("usage", "reader")
    assert printed.returncode == 0
    assert "smollm2-measured" in printed.stdout
    assert "TOTAL" in printed.stdout


def test_accounts_cli(gateway: GatewayProcess) -> None:
    assert gateway.cli("accounts", "create", "cli-acct", "--plan", "credits_only").returncode == 0
    topped = gateway.cli("accounts", "topup", "cli-acct", "--credits", "12.345678901234")
    assert topped.returncode == 0
    assert "12.345678901234" in topped.stdout
    assert gateway.cli("accounts", "topup", "cli-acct", "--credits", "1e3").returncode == 2
    assert gateway.cli("accounts", "plan", "cli-acct", "energy_only").returncode == 0
    shown = gateway.cli("accounts", "show", "cli-acct")
    assert "energy_only" in shown.stdout
    assert gateway.cli("accounts", "show", "nobody").returncode == 1


@pytest.mark.parametrize(
    ("path", "payload", "code"),
    [
        ("/accounts/answers/topup", {"credits": "-1"}, "VALIDATION_4005"),
        ("/accounts/answers/topup", {"credits": 1.5}, "VALIDATION_4003"),
        ("/accounts/answers/topup", {"credits": "0.0000000000001"}, "VALIDATION_4005"),
        ("/accounts", {"name": "x", "plan": "free_lunch"}, "VALIDATION_4005"),
        ("/accounts/nobody/topup", {"credits": "1"}, "VALIDATION_4040"),
    ],
)
def test_admin_account_errors(
    gateway: GatewayProcess, path: str, payload: dict[str, Any], code: str
) -> None:
    response = _admin(gateway, "POST", path, json=payload)
    assert response.status_code in (400, 404)
    assert response.json()["error"]["code"] == code
