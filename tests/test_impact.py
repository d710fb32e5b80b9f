"""Impact figures against a hand computation of EcoLogits' formula; money and the hourly table."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from hanse.config.intensity import intensity_at, read_hourly_intensity
from hanse.config.schema import ModelConfig, ProviderConfig, RouteConfig
from hanse.domain import Usage
from hanse.grid import grid_mix
from hanse.impact import estimate_impact
from hanse.money import format_eur, price_per_token_pico, to_pico

PROVIDER = ProviderConfig(
    id="upstream-a",
    kind="openai_compatible",
    base_url="http://127.0.0.1:9/v1",
    location="FR",
    pue=1.18,
    wue=0.5,
    renewable_percent=85,
)
MODEL = ModelConfig.model_validate(
    {
        "id": "glm-4.7",
        "context_length": 131072,
        "parameters_billion": {"active": 32, "total": 355},
        "routes": [{"provider": "upstream-a"}],
    }
)
NOON = datetime(2026, 11, 26, 12, 30, tzinfo=UTC)


def _by_hand(active: float, total: float, out_tokens: int, latency_s: float, pue: float) -> float:
    """EcoLogits' LLM energy model, written out (kWh)."""
    batch = 64
    gpu_kwh_per_token = (
        1.1665273170451914e-06 * math.exp(-0.011205921025579175 * batch) * active
        + 4.052928146734005e-05
    ) / 1000
    per_token_s = (
        0.0006785088094353663 * active + 0.0003119310311688259 * batch + 0.019473717579473387
    )
    latency = min(latency_s, out_tokens * per_token_s)
    gpus = math.ceil(1.2 * total * 16 / 8 / 80)
    gpus = 2 ** math.ceil(math.log2(gpus))
    server_kwh = latency / 3600 * 1.2 * (gpus / 8) / batch
    return pue * (server_kwh + gpus * out_tokens * gpu_kwh_per_token)


@pytest.mark.parametrize(("out_tokens", "latency_s"), [(100, 2.0), (100, 60.0), (7, 0.05)])
def test_ecologits_energy_matches_a_hand_computation(out_tokens: int, latency_s: float) -> None:
    impact = estimate_impact(
        provider=PROVIDER,
        route=MODEL.routes[0],
        model=MODEL,
        usage=Usage(12, out_tokens),
        latency_s=latency_s,
        at=NOON,
        hourly={},
    )
    expected = _by_hand(32, 355, out_tokens, latency_s, 1.18)
    assert impact.energy_kwh == pytest.approx(expected, rel=0.01)
    mix = grid_mix("FR")
    assert impact.carbon_g_co2 == pytest.approx(expected * mix.carbon_g_per_kwh, rel=0.01)
    water = expected / 1.18 * (0.5 + 1.18 * mix.water_l_per_kwh)
    assert impact.water_liters == pytest.approx(water, rel=0.01)
    body = impact.body()
    assert body["provider_id"] == "upstream-a"
    assert body["location"] == "FR"
    assert body["renewable_percent"] == 85
    assert 0 < body["energy_kwh"] == pytest.approx(expected, rel=0.01)


def test_measured_energy_counts_input_and_output_tokens() -> None:
    route = RouteConfig(provider="upstream-a", energy_kwh_per_token=3e-7)
    impact = estimate_impact(
        provider=PROVIDER,
        route=route,
        model=MODEL,
        usage=Usage(40, 10),
        latency_s=1,
        at=NOON,
        hourly={},
    )
    assert impact.energy_kwh == pytest.approx(50 * 3e-7 * 1.18)


def test_tiny_figures_keep_significant_digits() -> None:
    route = RouteConfig(provider="upstream-a", energy_kwh_per_token=1.234567891e-12)
    impact = estimate_impact(
        provider=PROVIDER,
        route=route,
        model=MODEL,
        usage=Usage(1, 0),
        latency_s=1,
        at=NOON,
        hourly={},
    )
    body = impact.body()
    assert body["energy_kwh"] == pytest.approx(1.234567891e-12 * 1.18, rel=1e-5)
    assert body["carbon_g_co2"] > 0
    assert body["water_liters"] > 0


def test_hourly_table_overrides_the_country_average(tmp_path: Path) -> None:
    table = tmp_path / "hourly.csv"
    table.write_text("country,hour,g_co2_per_kwh\nFR,12,100\nFR,2026-11-26T12,250\nDE,3,400\n")
    hourly = read_hourly_intensity(str(table))
    assert intensity_at(hourly, "FR", NOON) == 250  # the dated hour beats the daily profile
    assert intensity_at(hourly, "FR", NOON.replace(day=27)) == 100
    assert intensity_at(hourly, "FR", NOON.replace(hour=13)) is None
    route = RouteConfig(provider="upstream-a", energy_kwh_per_token=1e-6)
    impact = estimate_impact(
        provider=PROVIDER,
        route=route,
        model=MODEL,
        usage=Usage(10, 0),
        latency_s=1,
        at=NOON,
        hourly=hourly,
    )
    assert impact.carbon_g_co2 == pytest.approx(impact.energy_kwh * 250)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("country,hour\nFR,1\n", "header"),
        ("country,hour,g_co2_per_kwh\nFRA,1,10\n", "line 2: country"),
        ("country,hour,g_co2_per_kwh\nFR,24,10\n", "line 2: hour"),
        ("country,hour,g_co2_per_kwh\nFR,1,ten\n", "line 2: g_co2_per_kwh"),
    ],
)
def test_bad_hourly_tables_name_the_problem(tmp_path: Path, content: str, problem: str) -> None:
    table = tmp_path / "bad.csv"
    table.write_text(content)
    with pytest.raises(ValueError, match=problem):
        read_hourly_intensity(str(table))


def test_money_is_exact() -> None:
    assert price_per_token_pico(Decimal("0.40")) == 400_000
    assert price_per_token_pico(Decimal("0.000001")) == 1
    assert to_pico(Decimal("12.345678901234")) == 12_345_678_901_234
    with pytest.raises(ValueError, match="12 decimals"):
        to_pico(Decimal("0.0000000000001"))
    assert format_eur(0) == "0.0"
    assert format_eur(800_000_000) == "0.0008"
    assert format_eur(2 * 10**12) == "2.0"
    # 12 tokens in at 0.40/M and 7 out at 1.60/M: exact, no float drift.
    cost = 12 * price_per_token_pico(Decimal("0.40")) + 7 * price_per_token_pico(Decimal("1.60"))
    assert format_eur(cost) == "0.000016"
