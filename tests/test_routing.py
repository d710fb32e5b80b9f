"""Routing across providers: flavors, presets, filters, health, failover and the time budget.

Pure functions first (the score formula, the breaker, speed smoothing, filters, attempts), then real
`hanse serve` processes in front of several scripted upstreams on 127.0.0.1, one per provider,
driven with the `openai` SDK.
"""

from __future__ import annotations

import asyncio
import re
import time
import tomllib
from collections.abc import AsyncGenerator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

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
from tests.harness import GatewayProcess, assert_schema, free_port, sse_events
from tests.upstream import ANSWER, ScriptedUpstream

SECRET = "sk-upstream-routing-0123456789abcdef"
HELLO = [{"role": "user", "content": "Name three Hanseatic cities."}]
FLAVORS = ("balanced", "speed", "price", "eco", "batch")
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}

# The three providers of docs/routing.md's worked example: cheap but slow on a coal-heavy grid,
# fast and dear, green in between. `cheap` serves at reasoning quality (full-precision weights).
TRIO = {
    "cheap": 'location = "PL"\npue = 1.5\nrenewable_percent = 0\n'
    "prior_ttft_ms = 1500\nprior_tokens_per_s = 20\n",
    "fast": 'location = "DE"\npue = 1.2\nrenewable_percent = 30\n'
    "prior_ttft_ms = 100\nprior_tokens_per_s = 200\n",
    "green": 'location = "SE"\npue = 1.1\nrenewable_percent = 90\n'
    "prior_ttft_ms = 800\nprior_tokens_per_s = 50\n",
}
TRIO_PRICES = {"cheap": ("0.10", "0.20"), "fast": ("1.00", "2.00"), "green": ("0.60", "1.20")}
# What the formula says for HELLO (worked out by hand in docs/routing.md).
BEST = {"balanced": "green", "speed": "fast", "price": "cheap", "eco": "green", "batch": "cheap"}
ORDER = {
    "balanced": ["green", "fast", "cheap"],
    "speed": ["fast", "green", "cheap"],
    "price": ["cheap", "green", "fast"],
    "eco": ["green", "fast", "cheap"],
    "batch": ["cheap", "green", "fast"],
}
UPSTREAMS = ("cheap", "fast", "green", "front", "backup", "flaky", "patient")
FAULTS = ("fail-500", "rate-limit-30", "hang", "reset", "malformed", "unauthorized", "dead")
BUDGET_S = 2.5
ROUTING = f"""
[routing]
max_attempts = 3
request_timeout_s = {BUDGET_S}
breaker_failures = 3
breaker_cooldown_s = 1
speed_smoothing = 0
"""


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


# --- end to end: several upstreams on loopback -------------------------------------------------------


def _provider(name: str, base_url: str, extra: str = "", read_timeout_s: float = 1) -> str:
    return (
        f'[[providers]]\nid = "{name}"\nkind = "openai_compatible"\nbase_url = "{base_url}"\n'
        f'api_key_env = "ROUTING_TEST_KEY"\nconnect_timeout_s = 1\nread_timeout_s = {read_timeout_s}\n'
        f"{extra}\n"
    )


def _route(provider: str, upstream_model: str, extra: str = "") -> str:
    return (
        f'[[models.routes]]\nprovider = "{provider}"\nupstream_model = "{upstream_model}"\n{extra}'
    )


def _model(model_id: str, routes: list[str], capabilities: str = "") -> str:
    caps = f"capabilities = {{ {capabilities} }}\n" if capabilities else ""
    return f'[[models]]\nid = "{model_id}"\ncontext_length = 4096\n{caps}' + "".join(routes) + "\n"


def _trio_model(model_id: str, upstream_model: str) -> str:
    routes = []
    for name, (price_in, price_out) in TRIO_PRICES.items():
        extra = f'input_eur_per_million = "{price_in}"\noutput_eur_per_million = "{price_out}"\n'
        if name == "cheap":
            extra += "reasoning = true\n"
        routes.append(_route(name, upstream_model, extra))
    return _model(model_id, routes)


DOWN_MODELS = [f"down-{flavor}" for flavor in FLAVORS] + [f"down-{n}" for n in range(4)]


def gateway_config(upstreams: dict[str, ScriptedUpstream], dead_url: str) -> str:
    text = ROUTING
    for name, upstream in upstreams.items():
        # `patient` waits longer than the request's budget: only the budget cuts it short.
        read_timeout_s = 30 if name == "patient" else 1
        text += _provider(name, upstream.base_url, TRIO.get(name, ""), read_timeout_s)
    text += _provider("dead", dead_url)
    text += _trio_model("trio", "ok")
    for model_id in DOWN_MODELS:  # one model per check: no breaker carries over between them
        text += _trio_model(model_id, "fail-500")
    for fault in FAULTS:
        for mode in ("json", "sse"):
            first = _route("dead", "ok") if fault == "dead" else _route("front", fault)
            text += _model(f"fo-{fault}-{mode}", [first, _route("backup", "ok")])
    text += _model("held", [_route("front", "rate-limit-1"), _route("backup", "ok")])
    text += _model("circuit", [_route("flaky", "ok"), _route("backup", "ok")])
    text += _model("cut", [_route("front", "cut-mid-stream"), _route("backup", "ok")])
    text += _model("all-500", [_route("front", "fail-500"), _route("backup", "fail-500")])
    text += _model("all-429", [_route("front", "rate-limit-9"), _route("backup", "rate-limit-5")])
    text += _model("then-hang", [_route("front", "fail-500"), _route("backup", "hang")])
    text += _model(
        "four-down",
        [_route(name, "fail-500") for name in ("cheap", "fast", "green", "front")],
    )
    for mode in ("json", "sse"):
        text += _model(
            f"budget-{mode}",
            [_route("front", "fail-500"), _route("patient", "hang"), _route("backup", "ok")],
        )
    narrow = 'unsupported = ["function_calling", "streaming"]\ncontext_length = 64\n'
    text += _model(
        "caps",
        [_route("front", "ok", narrow), _route("backup", "ok")],
        "function_calling = true",
    )
    text += _model(
        "caps-none",
        [_route("front", "ok", 'unsupported = ["function_calling"]\n')],
        "function_calling = true",
    )
    return text


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, ScriptedUpstream]]:
    servers = {name: ScriptedUpstream().start() for name in UPSTREAMS}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstreams: dict[str, ScriptedUpstream]
) -> Iterator[GatewayProcess]:
    config = gateway_config(upstreams, f"http://127.0.0.1:{free_port()}/v1")
    workdir = Path(tmp_path_factory.mktemp("routing"))
    process = GatewayProcess(workdir, config=config, env={"ROUTING_TEST_KEY": SECRET}).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api_key(gateway: GatewayProcess) -> str:
    key = gateway.create_key()
    topup = gateway.cli("accounts", "topup", "tests", "--credits", "100")
    assert topup.returncode == 0, topup.stderr
    return key


@pytest.fixture(autouse=True)
def _fresh_records(upstreams: dict[str, ScriptedUpstream]) -> None:
    for server in upstreams.values():
        server.clear()
        server.behaviour = None


def calls(upstreams: dict[str, ScriptedUpstream]) -> dict[str, list[str]]:
    """What each upstream received since the test began (its upstream model names)."""
    return {
        name: [r.body["model"] for r in server.received()]
        for name, server in upstreams.items()
        if server.received()
    }


def attempts_of(caught: pytest.ExceptionInfo[openai.APIStatusError]) -> list[dict[str, Any]]:
    body = caught.value.body
    assert isinstance(body, dict)
    attempts: list[dict[str, Any]] = body["details"]["attempts"]
    return attempts


def assert_no_leak(text: str, upstreams: dict[str, ScriptedUpstream]) -> None:
    assert SECRET not in text
    assert "http://" not in text
    for server in upstreams.values():
        assert server.base_url.removeprefix("http://").removesuffix("/v1") not in text


def chat(client: OpenAI, model: str, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, messages=HELLO, extra_body=extra or None
    )


def stream_text(client: OpenAI, model: str) -> tuple[str, dict[str, str]]:
    with client.chat.completions.with_streaming_response.create(
        model=model, messages=HELLO, stream=True
    ) as response:
        events = sse_events(response.read().decode())
        headers = dict(response.headers)
    assert events[-1] == "[DONE]"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in events[:-1])
    return text, headers


# Flavors and presets.


@pytest.mark.parametrize("flavor", FLAVORS)
def test_each_flavor_picks_the_route_the_formula_says(
    client: OpenAI, upstreams: dict[str, ScriptedUpstream], flavor: str
) -> None:
    raw = chat(client, f"trio:{flavor}")
    completion = raw.parse()
    assert raw.headers["x-hanse-provider"] == BEST[flavor]
    assert raw.headers["x-hanse-attempts"] == "1"
    assert completion.model == f"trio:{flavor}"
    assert completion.choices[0].message.content == ANSWER
    assert calls(upstreams) == {BEST[flavor]: ["ok"]}


@pytest.mark.parametrize("flavor", FLAVORS)
def test_each_flavor_tries_every_route_in_score_order(
    client: OpenAI, upstreams: dict[str, ScriptedUpstream], flavor: str
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=f"down-{flavor}:{flavor}", messages=HELLO)
    assert caught.value.code == "INFERENCE_3103"
    assert [a["route"] for a in attempts_of(caught)] == ORDER[flavor]


def test_no_suffix_is_balanced(client: OpenAI) -> None:
    raw = chat(client, "trio")
    assert raw.headers["x-hanse-provider"] == BEST["balanced"]
    assert raw.parse().model == "trio"


@pytest.mark.parametrize(
    ("model", "preset", "served"),
    [
        ("trio", "non_reasoning", "fast"),  # = :speed
        ("trio", "reasoning", "cheap"),  # the route marked for reasoning quality
        ("trio:eco", "reasoning", "green"),  # a suffix beats the preset
        ("trio:price", "non_reasoning", "cheap"),
    ],
)
def test_presets(client: OpenAI, model: str, preset: str, served: str) -> None:
    raw = chat(client, model, preset=preset)
    assert raw.headers["x-hanse-provider"] == served
    assert raw.parse().model == model


def test_bad_flavor_is_3001_naming_the_flavors(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="trio:turbo", messages=HELLO)
    assert caught.value.code == "INFERENCE_3001"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["details"]["valid_flavors"] == list(FLAVORS)


# Provider filters.


@pytest.mark.parametrize(
    ("model", "provider", "served"),
    [
        ("trio", {"only": ["green"]}, "green"),
        ("trio", {"only": ["fast", "cheap"]}, "fast"),
        ("trio", {"ignore": ["green"]}, "fast"),
        ("trio", {"order": ["cheap"]}, "cheap"),
        ("trio:speed", {"max_price": {"completion": 1.5}}, "green"),
        ("trio:speed", {"max_price": {"prompt": "0.5"}}, "cheap"),
    ],
)
def test_provider_filters_pick_the_route(
    client: OpenAI,
    upstreams: dict[str, ScriptedUpstream],
    model: str,
    provider: dict[str, Any],
    served: str,
) -> None:
    raw = chat(client, model, provider=provider)
    assert raw.headers["x-hanse-provider"] == served
    assert calls(upstreams) == {served: ["ok"]}


@pytest.mark.parametrize(
    ("model", "provider", "attempted"),
    [
        ("down-0", {"order": ["cheap", "fast"]}, ["cheap", "fast", "green"]),
        ("down-1", {"order": ["cheap"], "allow_fallbacks": False}, ["cheap"]),
        ("down-2", {"allow_fallbacks": False}, ["green"]),
        ("down-3", {"ignore": ["fast"], "order": ["fast", "green"]}, ["green", "cheap"]),
    ],
)
def test_order_and_fallbacks(
    client: OpenAI, model: str, provider: dict[str, Any], attempted: list[str]
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        chat(client, model, provider=provider)
    assert [a["route"] for a in attempts_of(caught)] == attempted


@pytest.mark.parametrize(
    "provider",
    [
        {"only": ["nowhere"]},
        {"ignore": ["cheap", "fast", "green"]},
        {"max_price": {"prompt": 0.01}},
    ],
)
def test_filters_excluding_everything_is_3104(
    gateway: GatewayProcess,
    api_key: str,
    upstreams: dict[str, ScriptedUpstream],
    provider: dict[str, Any],
) -> None:
    sdk = OpenAI(base_url=f"{gateway.base_url}/v1", api_key=api_key, max_retries=2, timeout=30)
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model="trio", messages=HELLO, extra_body={"provider": provider})
    error = caught.value
    assert (error.status_code, error.code) == (503, "INFERENCE_3104")
    assert error.response.headers["x-should-retry"] == "false"
    assert_schema("ErrorResponse", error.response.json())
    assert isinstance(error.body, dict)
    assert {e["route"] for e in error.body["details"]["excluded"]} == {"cheap", "fast", "green"}
    assert calls(upstreams) == {}


def test_provider_field_is_strict(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, "trio", provider={"only": "green"})
    assert caught.value.code == "VALIDATION_4003"
    assert caught.value.param == "provider.only"
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, "trio", provider={"sort": "price"})
    assert caught.value.code == "VALIDATION_4007"


# Capability filters: a route that cannot serve the request is left out.


@pytest.mark.parametrize(
    ("fields", "served"),
    [
        ({}, "front"),
        ({"tools": [WEATHER_TOOL]}, "backup"),
        ({"max_tokens": 100}, "backup"),
    ],
)
def test_routes_lacking_a_capability_are_skipped(
    client: OpenAI, upstreams: dict[str, ScriptedUpstream], fields: dict[str, Any], served: str
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="caps", messages=HELLO, **fields)
    assert raw.headers["x-hanse-provider"] == served
    assert raw.headers["x-hanse-attempts"] == "1"
    assert list(calls(upstreams)) == [served]


def test_stream_skips_a_route_without_streaming(
    client: OpenAI, upstreams: dict[str, ScriptedUpstream]
) -> None:
    text, headers = stream_text(client, "caps")
    assert text == ANSWER
    assert headers["x-hanse-provider"] == "backup"
    assert list(calls(upstreams)) == ["backup"]


def test_no_route_with_the_capability_is_3104(client: OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="caps-none", messages=HELLO, tools=[WEATHER_TOOL])
    assert (caught.value.status_code, caught.value.code) == (503, "INFERENCE_3104")
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["details"]["excluded"] == [
        {"route": "front", "reason": "no function_calling"}
    ]


# Failover on each fault, before the first byte.


@pytest.mark.parametrize("fault", FAULTS)
def test_failover_on_each_fault(
    client: OpenAI, upstreams: dict[str, ScriptedUpstream], fault: str
) -> None:
    raw = chat(client, f"fo-{fault}-json")
    assert raw.headers["x-hanse-provider"] == "backup"
    assert raw.headers["x-hanse-attempts"] == "2"
    assert raw.parse().choices[0].message.content == ANSWER
    expected = {"backup": ["ok"]} if fault == "dead" else {"front": [fault], "backup": ["ok"]}
    assert calls(upstreams) == expected


@pytest.mark.parametrize("fault", FAULTS)
def test_stream_failover_before_the_first_byte(
    client: OpenAI, upstreams: dict[str, ScriptedUpstream], fault: str
) -> None:
    text, headers = stream_text(client, f"fo-{fault}-sse")
    assert text == ANSWER
    assert headers["x-hanse-provider"] == "backup"
    assert headers["x-hanse-attempts"] == "2"


def test_mid_stream_failure_ends_with_an_error_event(
    client: OpenAI, upstreams: dict[str, ScriptedUpstream]
) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="cut", messages=HELLO, stream=True
    ) as response:
        raw = response.read().decode()
    events = sse_events(raw)
    assert "[DONE]" not in events
    assert [c["choices"][0]["delta"].get("content") for c in events[:-1]] == ["", "Lübeck, "]
    assert events[-1]["error"]["code"] == "INFERENCE_3103"
    assert calls(upstreams) == {"front": ["cut-mid-stream"]}  # no silent switch mid-answer
    assert_no_leak(raw, upstreams)


# Health: Retry-After and the circuit breaker.


def test_retry_after_holds_the_route(
    client: OpenAI, upstreams: dict[str, ScriptedUpstream]
) -> None:
    first = chat(client, "held")
    assert (first.headers["x-hanse-provider"], first.headers["x-hanse-attempts"]) == ("backup", "2")
    second = chat(client, "held")
    assert (second.headers["x-hanse-provider"], second.headers["x-hanse-attempts"]) == (
        "backup",
        "1",
    )
    assert calls(upstreams) == {"front": ["rate-limit-1"], "backup": ["ok", "ok"]}
    time.sleep(1.1)  # Retry-After: 1 has passed
    third = chat(client, "held")
    assert third.headers["x-hanse-attempts"] == "2"
    assert calls(upstreams)["front"] == ["rate-limit-1", "rate-limit-1"]


def test_circuit_opens_skips_the_route_and_recovers(
    client: OpenAI, upstreams: dict[str, ScriptedUpstream]
) -> None:
    flaky = upstreams["flaky"]
    flaky.behaviour = "fail-500"
    for _ in range(3):  # breaker_failures = 3
        raw = chat(client, "circuit")
        assert (raw.headers["x-hanse-provider"], raw.headers["x-hanse-attempts"]) == ("backup", "2")
    assert len(flaky.received()) == 3
    for _ in range(2):  # open: skipped, the upstream sees nothing
        raw = chat(client, "circuit")
        assert (raw.headers["x-hanse-provider"], raw.headers["x-hanse-attempts"]) == ("backup", "1")
    assert len(flaky.received()) == 3
    flaky.behaviour = None
    time.sleep(1.1)  # breaker_cooldown_s = 1: the next request is the half-open probe
    raw = chat(client, "circuit")
    assert (raw.headers["x-hanse-provider"], raw.headers["x-hanse-attempts"]) == ("flaky", "1")
    raw = chat(client, "circuit")  # closed again
    assert raw.headers["x-hanse-provider"] == "flaky"
    assert len(flaky.received()) == 5


# When everything fails: the exact codes, and no secret in them.


def test_every_route_failing_is_3103_listing_attempts(
    client: OpenAI, upstreams: dict[str, ScriptedUpstream]
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="all-500", messages=HELLO)
    assert (caught.value.status_code, caught.value.code) == (502, "INFERENCE_3103")
    assert attempts_of(caught) == [
        {"route": "front", "reason": "server", "status": 500},
        {"route": "backup", "reason": "server", "status": 500},
    ]
    assert_no_leak(caught.value.response.text, upstreams)


def test_every_route_rate_limited_is_3108(
    client: OpenAI, upstreams: dict[str, ScriptedUpstream]
) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="all-429", messages=HELLO)
    assert (caught.value.status_code, caught.value.code) == (429, "INFERENCE_3108")
    assert caught.value.response.headers["retry-after"] == "5"
    assert [a["reason"] for a in attempts_of(caught)] == ["rate_limited", "rate_limited"]
    assert_no_leak(caught.value.response.text, upstreams)


def test_last_failure_a_timeout_is_3107(
    client: OpenAI, upstreams: dict[str, ScriptedUpstream]
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="then-hang", messages=HELLO)
    assert (caught.value.status_code, caught.value.code) == (504, "INFERENCE_3107")
    assert [a["reason"] for a in attempts_of(caught)] == ["server", "timeout"]
    assert_no_leak(caught.value.response.text, upstreams)


def test_attempts_are_bounded_in_total(
    client: OpenAI, upstreams: dict[str, ScriptedUpstream]
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="four-down", messages=HELLO)
    assert len(attempts_of(caught)) == 3  # max_attempts, although four routes could be tried
    assert sum(len(v) for v in calls(upstreams).values()) == 3


# The time budget.


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_never_waits_more_than_the_budget(
    client: OpenAI, upstreams: dict[str, ScriptedUpstream], stream: bool
) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model=f"budget-{'sse' if stream else 'json'}", messages=HELLO, stream=stream
        )
    elapsed = time.monotonic() - started
    assert (caught.value.status_code, caught.value.code) == (504, "INFERENCE_3107")
    assert attempts_of(caught) == [
        {"route": "front", "reason": "server", "status": 500},
        {"route": "patient", "reason": "timeout", "status": None},
    ]
    assert BUDGET_S - 0.2 < elapsed < BUDGET_S + 0.8
    assert "backup" not in calls(upstreams)  # no time was left for it


# Live speed measurements change the ranking.


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAI]:
    upstream = ScriptedUpstream().start()
    config = "[routing]\nspeed_smoothing = 1\n\n"
    for name, ttft_ms in (("quick", 50), ("steady", 400)):
        speed = f"prior_ttft_ms = {ttft_ms}\nprior_tokens_per_s = 1000\n"
        config += _provider(name, upstream.base_url, speed, read_timeout_s=10)
    for mode in ("json", "sse"):
        routes = [_route("quick", "slow-1200"), _route("steady", "ok")]
        config += _model(f"measured-{mode}", routes)
    workdir = Path(tmp_path_factory.mktemp("measured"))
    process = GatewayProcess(workdir, config=config, env={"ROUTING_TEST_KEY": SECRET}).start()
    yield OpenAI(base_url=f"{process.base_url}/v1", api_key=process.create_key(), max_retries=0)
    process.stop()
    upstream.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_measured_speed_replaces_the_prior(measured: OpenAI, stream: bool) -> None:
    model = f"measured-{'sse' if stream else 'json'}:speed"
    served = []
    for _ in range(2):
        raw = measured.chat.completions.with_raw_response.create(
            model=model, messages=HELLO, stream=stream
        )
        served.append(raw.headers["x-hanse-provider"])
        if stream:
            # A stream's speed is measured when it ends: read it all before the next request.
            for _ in raw.parse():
                pass
    # The prior says `quick` (50 ms); its first answer took 1.2 s, so `steady` (400 ms) goes first.
    assert served == ["quick", "steady"]
