"""Routing end to end: real `hanse serve` processes in front of several scripted upstreams on
127.0.0.1, one per provider, driven with the `openai` SDK: flavors, presets, filters, failover on each
fault, circuits and the time budget."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.harness import GatewayProcess, assert_schema, free_port, sse_events
from tests.routing_cases import BEST, FLAVORS, HELLO, ORDER, TRIO, TRIO_PRICES, WEATHER_TOOL
from tests.upstream import ANSWER, ScriptedUpstream

SECRET = "sk-upstream-routing-0123456789abcdef"
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
    assert caught.value.response.headers["x-hanse-attempts"] == "2"
    assert_no_leak(caught.value.response.text, upstreams)


def test_failed_attempts_are_counted_in_metrics_by_reason(
    client: OpenAI, gateway: GatewayProcess
) -> None:
    def failed(route: str, reason: str) -> float:
        text = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text
        found = re.search(
            rf'hanse_failed_attempts_total\{{model="all-500",reason="{reason}",route="{route}"\}} (\S+)',
            text,
        )
        return float(found[1]) if found else 0.0

    before = failed("front", "server"), failed("backup", "server")
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="all-500", messages=HELLO)
    assert (failed("front", "server"), failed("backup", "server")) == (
        before[0] + 1,
        before[1] + 1,
    )


def test_an_error_before_any_route_says_no_attempt(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert caught.value.response.headers["x-hanse-attempts"] == "0"


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
