"""Routing in-process: the score formula, presets, the breaker, speed smoothing, filters, attempts,
and the router over fake providers. The gateway end to end is in test_routing_gateway.py."""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import AsyncGenerator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from hanse.config.loader import load_catalog
from hanse.config.schema import Catalog, ModelConfig, RouteConfig
from hanse.domain import ChoiceDelta, Completion, InferenceRequest, ProviderPreferences, Usage
from hanse.errors import HanseError
from hanse.providers.base import ProviderFailure
from hanse.resolve import resolve_model
from hanse.routing import Router
from hanse.routing.attempts import Attempts
from hanse.routing.filters import arrange, eligible
from hanse.routing.health import Breaker, BreakerSettings, InMemoryHealth
from hanse.routing.ranking import (
    FLAVOR_WEIGHTS,
    REFERENCE_OUTPUT_TOKENS,
    Factors,
    Speed,
    Weights,
    carbon_intensity,
    expected_seconds,
    request_price,
    scores,
)
from hanse.routing.speed import SpeedBook, prior
from hanse.tokens import estimate_tokens
from tests.routing_cases import FLAVORS, HELLO, ORDER, TRIO, TRIO_PRICES, WEATHER_TOOL

# --- the score formula -----------------------------------------------------------------------------


def trio_catalog() -> Catalog:
    return Catalog.model_validate(trio_data())


def trio_data() -> dict[str, Any]:
    return {
        "providers": [
            {"id": "hanse-local", "kind": "local"},
            *({"id": name, "kind": "local", **tomllib.loads(text)} for name, text in TRIO.items()),
        ],
        "models": [
            {
                "id": "trio",
                "context_length": 4096,
                "routes": [
                    {
                        "provider": name,
                        "input_eur_per_million": price_in,
                        "output_eur_per_million": price_out,
                        "reasoning": name == "cheap",
                    }
                    for name, (price_in, price_out) in TRIO_PRICES.items()
                ],
            }
        ],
    }


def trio_factors(catalog: Catalog, input_tokens: int) -> list[Factors]:
    model = catalog.models[0]
    return [
        Factors(
            price_eur=request_price(route, input_tokens, REFERENCE_OUTPUT_TOKENS),
            seconds=expected_seconds(
                prior(catalog.provider(route.provider)), REFERENCE_OUTPUT_TOKENS
            ),
            carbon_g_per_kwh=carbon_intensity(catalog.provider(route.provider)),
        )
        for route in model.routes
    ]


def test_flavor_weights_are_the_published_table() -> None:
    table = {name: (w.price, w.speed, w.environment) for name, w in FLAVOR_WEIGHTS.items()}
    assert table == {
        "balanced": (0.40, 0.40, 0.20),
        "speed": (0.20, 0.70, 0.10),
        "price": (0.70, 0.20, 0.10),
        "eco": (0.20, 0.20, 0.60),
        "batch": (0.80, 0.05, 0.15),
    }
    assert all(abs(sum(weights) - 1) < 1e-9 for weights in table.values())


def test_factors_of_one_route() -> None:
    catalog = trio_catalog()
    cheap = catalog.models[0].routes[0]
    assert request_price(cheap, 1000, 500) == Decimal("0.0002")
    assert expected_seconds(Speed(ttft_s=0.5, tokens_per_s=100), 200) == 2.5
    green = catalog.provider("green")
    assert carbon_intensity(green) == pytest.approx(35.3 * 1.1 * 0.1, rel=0.01)
    assert carbon_intensity(catalog.provider("fast")) == pytest.approx(329.6 * 1.2 * 0.7, rel=0.01)


def test_scores_normalise_each_factor_by_its_largest_value() -> None:
    factors = [
        Factors(price_eur=Decimal(1), seconds=10, carbon_g_per_kwh=0),
        Factors(price_eur=Decimal(4), seconds=5, carbon_g_per_kwh=0),
    ]
    # price shares 0.25 / 1, speed shares 1 / 0.5, carbon all zero: that factor counts for both.
    assert scores(factors, Weights(0.5, 0.3, 0.2)) == pytest.approx(
        [0.5 * 0.75 + 0.3 * 0 + 0.2, 0.5 * 0 + 0.3 * 0.5 + 0.2]
    )
    # Units do not matter: the same factors in cents and milliseconds score the same.
    scaled = [Factors(f.price_eur * 100, f.seconds * 1000, 0) for f in factors]
    assert scores(scaled, Weights(0.5, 0.3, 0.2)) == scores(factors, Weights(0.5, 0.3, 0.2))


def test_worked_example_of_the_docs() -> None:
    catalog = trio_catalog()
    input_tokens = estimate_tokens(HELLO)
    assert input_tokens == 11
    factors = trio_factors(catalog, input_tokens)
    names = [r.provider for r in catalog.models[0].routes]
    table = {
        flavor: dict(zip(names, scores(factors, FLAVOR_WEIGHTS[flavor]), strict=True))
        for flavor in FLAVORS
    }
    # docs/routing.md prints these, rounded to three decimals.
    assert {f: {n: round(s, 3) for n, s in row.items()} for f, row in table.items()} == {
        "balanced": {"cheap": 0.36, "fast": 0.499, "green": 0.594},
        "speed": {"cheap": 0.18, "fast": 0.701, "green": 0.59},
        "price": {"cheap": 0.63, "fast": 0.249, "green": 0.497},
        "eco": {"cheap": 0.18, "fast": 0.593, "green": 0.795},
        "batch": {"cheap": 0.72, "fast": 0.148, "green": 0.499},
    }
    for flavor, row in table.items():
        assert sorted(row, key=lambda n: -row[n]) == ORDER[flavor]


def test_plan_ranks_by_flavor_and_reasoning() -> None:
    catalog = trio_catalog()
    router = Router(catalog, {})
    model = catalog.models[0]
    request = InferenceRequest(model="trio", messages=HELLO)
    for flavor in FLAVORS:
        plan = router.plan(model, request, flavor, None, 11)
        assert [r.id for r in plan.routes] == ORDER[flavor]
    plan = router.plan(model, request, "balanced", None, 11, reasoning=True)
    assert [r.id for r in plan.routes] == ["cheap", "green", "fast"]


def test_the_three_provider_example_of_the_docs_ranks_as_documented(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    [example] = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "llama-3.3-70b" in b]
    (tmp_path / "three.toml").write_text(example)
    catalog = load_catalog(tmp_path / "three.toml")
    router = Router(catalog, {})
    request = InferenceRequest(model="llama-3.3-70b", messages=HELLO)
    for flavor in FLAVORS:
        plan = router.plan(catalog.models[0], request, flavor, None, estimate_tokens(HELLO))
        assert [r.id for r in plan.routes] == ORDER[flavor]


def test_routing_config_is_strict() -> None:
    data = trio_data()
    data["routing"] = {"max_attempts": 0}
    with pytest.raises(ValueError, match="max_attempts"):
        Catalog.model_validate(data)
    data["routing"] = {"retries": 2}
    with pytest.raises(ValueError, match="retries"):
        Catalog.model_validate(data)
    data = trio_data()
    data["models"][0]["routes"].append({"provider": "green"})
    with pytest.raises(ValueError, match="two routes through provider 'green'"):
        Catalog.model_validate(data)
    data = trio_data()
    data["models"][0]["routes"][0]["unsupported"] = ["telepathy"]
    with pytest.raises(ValueError, match="unsupported"):
        Catalog.model_validate(data)


# --- presets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "preset", "flavor", "reasoning"),
    [
        ("trio", None, "balanced", False),
        ("trio", "non_reasoning", "speed", False),
        ("trio", "reasoning", "balanced", True),
        ("trio:eco", "reasoning", "eco", False),
        ("trio:price", "non_reasoning", "price", False),
        ("trio:balanced", "non_reasoning", "balanced", False),
    ],
)
def test_preset_and_suffix(
    requested: str, preset: str | None, flavor: str, reasoning: bool
) -> None:
    resolved = resolve_model(trio_catalog(), requested, preset)
    assert (resolved.model.id, resolved.flavor, resolved.reasoning) == ("trio", flavor, reasoning)


# --- the circuit breaker -----------------------------------------------------------------------------

SETTINGS = BreakerSettings(failures=3, failure_rate=0.5, window_s=60, min_requests=6, cooldown_s=10)


def test_breaker_opens_after_consecutive_failures() -> None:
    breaker = Breaker(SETTINGS)
    for now in (0, 1):
        breaker.record(False, now)
        assert breaker.state == "closed" and breaker.admits(now)
    breaker.record(True, 2)  # a success resets the count
    for now in (3, 4, 5):
        breaker.record(False, now)
    assert breaker.state == "open"
    assert not breaker.admits(5) and not breaker.admits(14.9)


def test_breaker_opens_on_the_failure_rate_over_the_window() -> None:
    breaker = Breaker(SETTINGS)
    for now, ok in enumerate([False, True, False, True, False, True]):
        breaker.record(ok, now)
        assert breaker.state == "closed"  # never 3 in a row; under 6 outcomes, or a success
    breaker.record(False, 6)
    assert breaker.state == "open"  # 4 failures of 7 >= 50%
    assert breaker.consecutive == 1


def test_breaker_forgets_outcomes_older_than_the_window() -> None:
    breaker = Breaker(SETTINGS)
    for now, ok in enumerate([False, True, False, True, False]):
        breaker.record(ok, now)
    breaker.record(True, 100)  # the old ones fell out: 0 of 1
    breaker.record(False, 101)
    assert breaker.state == "closed"


def test_breaker_half_open_probe() -> None:
    breaker = Breaker(SETTINGS)
    for now in (0, 0, 0):
        breaker.record(False, now)
    assert not breaker.admits(9.9)
    assert breaker.admits(10)  # the probe
    assert breaker.state == "half_open"
    assert not breaker.admits(10.5)  # one probe at a time
    breaker.record(False, 11)  # the probe failed: open again, a fresh cooldown
    assert breaker.state == "open" and not breaker.admits(20.9)
    assert breaker.admits(21)
    breaker.record(True, 21.5)
    assert breaker.state == "closed" and breaker.admits(21.6)
    assert breaker.consecutive == 0 and len(breaker.outcomes) == 0


def test_breaker_frees_a_lost_probe_after_a_cooldown() -> None:
    breaker = Breaker(SETTINGS)
    for _ in range(3):
        breaker.record(False, 0)
    assert breaker.admits(10)  # a probe that never reports back
    assert not breaker.admits(19.9)
    assert breaker.admits(20)


def test_breaker_hold_for_retry_after() -> None:
    breaker = Breaker(SETTINGS)
    breaker.hold(7)
    assert not breaker.admits(6.9)
    breaker.hold(3)  # an earlier end never shortens the hold
    assert not breaker.admits(6.9) and breaker.admits(7)
    assert breaker.state == "closed"


def test_in_memory_health_keys_routes_apart() -> None:
    now = [0.0]
    health = InMemoryHealth(SETTINGS, clock=lambda: now[0])

    async def scenario() -> None:
        for _ in range(3):
            await health.failed("a@m")
        await health.rate_limited("b@m", 5)
        assert not await health.admits("a@m")
        assert not await health.admits("b@m")
        assert await health.admits("a@other")
        now[0] = 10
        assert await health.admits("a@m") and await health.admits("b@m")
        await health.succeeded("a@m")
        assert health.breaker("a@m").state == "closed"

    asyncio.run(scenario())


# --- speed measurements ------------------------------------------------------------------------------


def test_speed_prior_then_smoothed_measurements() -> None:
    provider = trio_catalog().provider("green")
    book = SpeedBook(smoothing=0.5)

    def estimate(key: str = "green@trio") -> tuple[float, float]:
        speed = book.estimate(key, provider)
        return round(speed.ttft_s, 9), round(speed.tokens_per_s, 9)

    assert estimate() == (0.8, 50)
    book.record_stream("green@trio", provider, ttft_s=0.2, tokens=100, rest_s=1.0)
    assert estimate() == (0.5, 75)
    assert estimate("green@other") == (0.8, 50)
    # A whole answer: 2 s for 60 tokens, split with the TTFT estimate (0.5 s).
    book.record_whole("green@trio", provider, total_s=2.0, tokens=60)
    assert estimate() == (0.5, 57.5)
    # A very quick whole answer gives at most half its time to the first token.
    book.record_whole("green@trio", provider, total_s=0.2, tokens=0)
    assert estimate() == (0.3, 57.5)


def test_speed_smoothing_zero_keeps_the_prior() -> None:
    provider = trio_catalog().provider("fast")
    book = SpeedBook(smoothing=0)
    book.record_stream("fast@trio", provider, ttft_s=9, tokens=1, rest_s=9)
    assert book.estimate("fast@trio", provider) == prior(provider)


# --- filters and attempts ----------------------------------------------------------------------------


def caps_model() -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "id": "caps",
            "context_length": 4096,
            "capabilities": {"function_calling": True, "json_schema": True},
            "routes": [
                {
                    "provider": "a",
                    "unsupported": ["function_calling", "streaming"],
                    "context_length": 64,
                    "input_eur_per_million": "0.1",
                },
                {"provider": "b", "input_eur_per_million": "0.9", "output_eur_per_million": "2"},
            ],
        }
    )


@pytest.mark.parametrize(
    ("request_fields", "preferences", "kept", "reasons"),
    [
        ({}, ProviderPreferences(), ["a", "b"], []),
        ({"tools": [WEATHER_TOOL]}, ProviderPreferences(), ["b"], ["no function_calling"]),
        ({"stream": True}, ProviderPreferences(), ["b"], ["no streaming"]),
        ({"max_tokens": 60}, ProviderPreferences(), ["b"], ["context_length 64 too small"]),
        ({"logprobs": True}, ProviderPreferences(), ["a", "b"], []),
        ({}, ProviderPreferences(only=("b",)), ["b"], ["not in provider.only"]),
        ({}, ProviderPreferences(ignore=("b",)), ["a"], ["in provider.ignore"]),
        (
            {},
            ProviderPreferences(max_input_eur_per_million=Decimal("0.5")),
            ["a"],
            ["over provider.max_price"],
        ),
        (
            {},
            ProviderPreferences(max_output_eur_per_million=Decimal("1.99")),
            ["a"],
            ["over provider.max_price"],
        ),
    ],
)
def test_eligible_routes(
    request_fields: dict[str, Any],
    preferences: ProviderPreferences,
    kept: list[str],
    reasons: list[str],
) -> None:
    request = InferenceRequest(model="caps", messages=HELLO, **request_fields)
    routes, excluded = eligible(caps_model(), request, preferences, 11)
    assert [r.id for r in routes] == kept
    assert [e.reason for e in excluded] == reasons


def test_arrange_applies_order_and_fallbacks() -> None:
    ranked = [RouteConfig(provider=name) for name in ("x", "y", "z")]

    def ids(preferences: ProviderPreferences) -> list[str]:
        return [r.id for r in arrange(ranked, preferences)]

    assert ids(ProviderPreferences()) == ["x", "y", "z"]
    assert ids(ProviderPreferences(order=("z", "nowhere", "y"))) == ["z", "y", "x"]
    assert ids(ProviderPreferences(order=("z",), allow_fallbacks=False)) == ["z"]
    assert ids(ProviderPreferences(allow_fallbacks=False)) == ["x"]


def test_attempts_defer_unhealthy_routes_and_stop_at_the_bound() -> None:
    routes = [RouteConfig(provider=name) for name in ("a", "b", "c", "d")]
    asked: list[str] = []

    async def admits(route: RouteConfig) -> bool:
        asked.append(route.id)
        return route.id != "a"

    async def scenario() -> list[str]:
        tries = Attempts(routes, admits, max_attempts=3, budget_s=60)
        tried = []
        while (route := await tries.next()) is not None:
            tried.append(route.id)
        return tried

    assert asyncio.run(scenario()) == ["b", "c", "d"]
    assert asked == ["a", "b", "c", "d"]

    async def deferred_last() -> list[str]:
        tries = Attempts(routes[:2], admits, max_attempts=5, budget_s=60)
        return [r.id for r in [await tries.next(), await tries.next()] if r is not None]

    assert asyncio.run(deferred_last()) == ["b", "a"]

    async def no_time() -> RouteConfig | None:
        return await Attempts(routes, admits, max_attempts=5, budget_s=0).next()

    assert asyncio.run(no_time()) is None


# --- the router in-process, with fake providers -------------------------------------------------------


class FakeProvider:
    """Yields two deltas, then fails or finishes, as told."""

    def __init__(self, id_: str, fail_mid_stream: bool) -> None:
        self.id = id_
        self.fail_mid_stream = fail_mid_stream

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def count_input_tokens(self, request: InferenceRequest, model: ModelConfig) -> int | None:
        return None

    async def complete(self, request: InferenceRequest, route: RouteConfig) -> Completion:
        raise ProviderFailure("server", "not used", status=500)

    async def stream(
        self, request: InferenceRequest, route: RouteConfig
    ) -> AsyncGenerator[ChoiceDelta | Usage, None]:
        yield ChoiceDelta(index=0, content="Lübeck")
        await asyncio.sleep(0.05)
        yield ChoiceDelta(index=0, content=", Hamburg")
        if self.fail_mid_stream:
            raise ProviderFailure("connect", "cut")
        yield Usage(11, 40)


@pytest.mark.parametrize("fail_mid_stream", [False, True])
def test_stream_end_updates_latency_health_and_speed(fail_mid_stream: bool) -> None:
    catalog = trio_catalog()
    model = catalog.models[0]
    provider = FakeProvider("green", fail_mid_stream)
    health = InMemoryHealth(BreakerSettings.from_config(catalog.routing))
    router = Router(catalog, {name: provider for name in TRIO}, health)
    request = InferenceRequest(model="trio", messages=HELLO, stream=True)

    async def scenario() -> tuple[float, float, list[Any]]:
        plan = router.plan(model, request, "balanced", ProviderPreferences(only=("green",)), 11)
        first, events, served = await router.stream(plan, request)
        at_first = served.latency_s
        seen: list[Any] = [first]
        try:
            async for event in events:
                seen.append(event)
        except ProviderFailure as failure:
            seen.append(failure.kind)
        return at_first, served.latency_s, seen

    at_first, at_end, seen = asyncio.run(scenario())
    assert at_end > at_first + 0.04
    key = f"green@{model.id}"
    breaker = health.breaker(key)
    speed = router._speed.estimate(key, catalog.provider("green"))
    if fail_mid_stream:
        assert seen[-1] == "connect"
        assert breaker.consecutive == 1
        assert speed == prior(catalog.provider("green"))
    else:
        assert seen[-1] == Usage(11, 40)
        assert breaker.consecutive == 0 and len(breaker.outcomes) == 1
        assert speed.ttft_s < 0.8 and speed.tokens_per_s > 50


def test_plan_refuses_with_3104_when_filters_leave_nothing() -> None:
    catalog = trio_catalog()
    router = Router(catalog, {})
    request = InferenceRequest(model="trio", messages=HELLO)
    with pytest.raises(HanseError) as caught:
        router.plan(catalog.models[0], request, "balanced", ProviderPreferences(only=()), 11)
    error = caught.value
    assert (error.error.code, error.error.status, error.error.retryable) == (
        "INFERENCE_3104",
        503,
        False,
    )
    assert [e["route"] for e in error.details["excluded"]] == ["cheap", "fast", "green"]
    assert error.headers == {"X-Should-Retry": "false"}
