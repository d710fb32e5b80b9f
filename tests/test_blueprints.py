"""Blueprints and skills inline (`blueprint_config`, `skill_configs`) through the openai SDK: the
template and its variables, defaults and locked parameters, the model, skills' tools and
instructions, overrides. The scripted upstream records what the model was sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.composition import (
    EMBEDDED,
    UPSTREAM,
    assert_chunk,
    assert_completion,
    ledger,
    reset,
    sdk,
    start_gateway,
)
from tests.harness import GatewayProcess, sse_events
from tests.upstream import ScriptedUpstream

HELLO = [{"role": "user", "content": "Where is my parcel?"}]
SUPPORT: dict[str, Any] = {
    "name": "support-bot",
    "system": "You are the support assistant of {{company}}. Answer in {{ language }}.",
    "variables": {
        "company": {"required": True},
        "language": {"default": "English", "enum": ["English", "German"]},
    },
    "defaults": {"temperature": 0.2, "max_tokens": 512},
    "locked": {"top_p": 0.5},
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER_SKILL = {
    "name": "weather",
    "instructions": "Use get_weather for weather.",
    "tools": [WEATHER],
}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[GatewayProcess]:
    process = start_gateway(Path(tmp_path_factory.mktemp("blueprints")), upstream)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> OpenAI:
    return sdk(gateway, gateway.create_key(account="blueprints"))


@pytest.fixture
def scripted(upstream: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    reset(upstream)
    yield upstream
    reset(upstream)


def _sent(upstream: ScriptedUpstream) -> dict[str, Any]:
    (received,) = upstream.received()
    return received.body


def _error(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    body = exc.value.body
    assert isinstance(body, dict)
    return body


# --- template and variables -----------------------------------------------------------------------


def test_system_is_rendered_and_prepended(client: OpenAI, scripted: ScriptedUpstream) -> None:
    client.chat.completions.create(
        model=UPSTREAM,
        messages=HELLO,  # type: ignore[arg-type]
        extra_body={"blueprint_config": SUPPORT, "variables": {"company": "Hanse {{x}} AG"}},
    )
    sent = _sent(scripted)
    # One pass: a value that looks like a placeholder stays text.
    assert sent["messages"][0] == {
        "role": "system",
        "content": "You are the support assistant of Hanse {{x}} AG. Answer in English.",
    }
    assert sent["messages"][1:] == HELLO


def test_enum_variable_is_filled(client: OpenAI, scripted: ScriptedUpstream) -> None:
    client.chat.completions.create(
        model=UPSTREAM,
        messages=HELLO,  # type: ignore[arg-type]
        extra_body={
            "blueprint_config": SUPPORT,
            "variables": {"company": "Hanse", "language": "German"},
        },
    )
    assert _sent(scripted)["messages"][0]["content"].endswith("Answer in German.")


@pytest.mark.parametrize(
    ("variables", "code", "param"),
    [
        ({}, "VALIDATION_4006", "variables.company"),
        ({"company": "Hanse", "language": "French"}, "VALIDATION_4005", "variables.language"),
        ({"company": "Hanse", "tone": "dry"}, "VALIDATION_4007", "variables.tone"),
        ({"company": 42}, "VALIDATION_4003", "variables.company"),
    ],
)
def test_variable_errors_name_the_variable(
    client: OpenAI, scripted: ScriptedUpstream, variables: dict[str, Any], code: str, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model=UPSTREAM,
            messages=HELLO,  # type: ignore[arg-type]
            extra_body={"blueprint_config": SUPPORT, "variables": variables},
        )
    error = _error(exc)
    assert (error["code"], error["param"]) == (code, param)
    assert not scripted.received()


def test_variables_without_a_blueprint_are_refused(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model=UPSTREAM,
            messages=HELLO,  # type: ignore[arg-type]
            extra_body={"variables": {"company": "Hanse"}},
        )
    assert _error(exc)["param"] == "variables"


@pytest.mark.parametrize(
    ("change", "code", "param", "words"),
    [
        (
            {"railguards": {"input": [{"type": "deny_pattern", "pattern": "(unclosed"}]}},
            "VALIDATION_4005",
            "blueprint_config.railguards.input[0].pattern",
            "not a valid regular expression",
        ),
        (
            {"railguards": {"input": [{"type": "profanity"}]}},
            "VALIDATION_4005",
            "blueprint_config.railguards.input[0].type",
            "deny_pattern",
        ),
        (
            {"system": "Hello {{customer}}"},
            "VALIDATION_4005",
            "blueprint_config.system",
            "`customer`",
        ),
        (
            {"railguards": {"output": [{"type": "deny_pattern", "pattern": "secret.*"}]}},
            "VALIDATION_4005",
            "blueprint_config.railguards.output[0].pattern",
            "at most 1000 characters",
        ),
        (
            {"railguards": {"output": [{"type": "max_input_tokens", "limit": 3}]}},
            "VALIDATION_4005",
            "blueprint_config.railguards.output[0].type",
            "pii",
        ),
        ({"temperature": 1}, "VALIDATION_4007", "blueprint_config.temperature", "temperature"),
        ({"defaults": {"top_p": 3}}, "VALIDATION_4004", "blueprint_config.defaults.top_p", "1"),
    ],
)
def test_a_bad_blueprint_is_a_clear_validation_error(
    client: OpenAI, change: dict[str, Any], code: str, param: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model=UPSTREAM,
            messages=HELLO,  # type: ignore[arg-type]
            extra_body={"blueprint_config": {"name": "bad", **change}},
        )
    error = _error(exc)
    assert (error["code"], error["param"]) == (code, param)
    assert words in error["message"]


# --- model and parameters -------------------------------------------------------------------------


def test_blueprint_model_serves_a_request_without_one(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=openai.omit,
        messages=[{"role": "user", "content": "Say hi."}],
        extra_body={"blueprint_config": {"name": "tiny", "model": EMBEDDED}},
        max_tokens=4,
        seed=7,
    )
    assert response.model == EMBEDDED
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage is not None and response.usage.completion_tokens <= 4


def test_request_model_wins_unless_locked(client: OpenAI, scripted: ScriptedUpstream) -> None:
    blueprint = {"name": "m", "model": EMBEDDED}
    response = client.chat.completions.create(
        model=UPSTREAM,
        messages=HELLO,  # type: ignore[arg-type]
        extra_body={"blueprint_config": blueprint},
    )
    assert response.model == UPSTREAM and len(scripted.received()) == 1
    locked = {"name": "m", "locked": {"model": UPSTREAM}}
    response = client.chat.completions.create(
        model=EMBEDDED,
        messages=HELLO,  # type: ignore[arg-type]
        extra_body={"blueprint_config": locked},
    )
    assert response.model == UPSTREAM and len(scripted.received()) == 2


def test_no_model_anywhere_is_4002(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model=openai.omit,
            messages=HELLO,  # type: ignore[arg-type]
            extra_body={"blueprint_config": {"name": "modelless"}},
        )
    assert _error(exc)["code"] == "VALIDATION_4002"


def test_defaults_fill_gaps_and_locked_always_wins(
    client: OpenAI, scripted: ScriptedUpstream
) -> None:
    blueprint = {
        "name": "params",
        "defaults": {"temperature": 0.2, "max_tokens": 512, "seed": 11},
        "locked": {"max_tokens": 64, "presence_penalty": 0.5},
    }
    client.chat.completions.create(
        model=UPSTREAM,
        messages=HELLO,  # type: ignore[arg-type]
        max_completion_tokens=2000,
        seed=3,
        presence_penalty=-1,
        extra_body={"blueprint_config": blueprint},
    )
    sent = _sent(scripted)
    assert sent["temperature"] == 0.2  # default: the request said nothing
    assert sent["seed"] == 3  # the request's own value beats a default
    assert sent["max_tokens"] == 64  # locked beats the request (max_completion_tokens too)
    assert sent["presence_penalty"] == 0.5


# --- skills ---------------------------------------------------------------------------------------


def test_skills_add_tools_and_instructions(client: OpenAI, scripted: ScriptedUpstream) -> None:
    other = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    client.chat.completions.create(
        model=UPSTREAM,
        messages=HELLO,  # type: ignore[arg-type]
        tools=[other],  # type: ignore[list-item]
        extra_body={
            "blueprint_config": SUPPORT,
            "variables": {"company": "Hanse"},
            "skill_configs": [WEATHER_SKILL, {"name": "terse", "instructions": "Be terse."}],
        },
    )
    sent = _sent(scripted)
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_time", "get_weather"]
    assert sent["messages"][0]["content"] == (
        "You are the support assistant of Hanse. Answer in English.\n\n"
        "Use get_weather for weather.\n\nBe terse."
    )


def test_skills_alone_need_no_blueprint(client: OpenAI, scripted: ScriptedUpstream) -> None:
    response = client.chat.completions.create(
        model=UPSTREAM,
        messages=HELLO,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        extra_body={"skill_configs": [WEATHER_SKILL]},
    )
    assert response.choices[0].finish_reason == "stop"
    sent = _sent(scripted)
    assert sent["messages"][0] == {"role": "system", "content": "Use get_weather for weather."}
    assert sent["tool_choice"]["function"]["name"] == "get_weather"


def test_a_tool_name_clash_is_an_error(client: OpenAI, scripted: ScriptedUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model=UPSTREAM,
            messages=HELLO,  # type: ignore[arg-type]
            tools=[WEATHER],  # type: ignore[list-item]
            extra_body={"skill_configs": [WEATHER_SKILL]},
        )
    error = _error(exc)
    assert (error["code"], error["param"]) == ("VALIDATION_4005", "skill_configs[0]")
    assert "get_weather" in error["message"]
    assert not scripted.received()


def test_skill_tools_work_on_the_embedded_model(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=EMBEDDED,
        messages=[{"role": "user", "content": "Weather in Bremen?"}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=40,
        temperature=0,  # greedy: the same complete call every run, within max_tokens
        extra_body={"skill_configs": [WEATHER_SKILL]},
    )
    calls = response.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]


# --- overrides ------------------------------------------------------------------------------------

GREETER = {
    "name": "greeter",
    "model": UPSTREAM,
    "variables": {"company": {"default": "Hanse"}},
    "overrides": [
        {"when": {"last_user_matches": "(?i)^(hi|hello)[.!]?$"}, "reply": "Hello from {{company}}!"}
    ],
}


def test_override_answers_without_a_model(
    gateway: GatewayProcess, client: OpenAI, scripted: ScriptedUpstream
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=openai.omit,
        messages=[{"role": "user", "content": "Hello!"}],
        n=2,
        extra_body={"blueprint_config": GREETER, "request_id": "override-1"},
    )
    body = raw.http_response.json()
    assert_completion(body)
    assert [c["message"]["content"] for c in body["choices"]] == ["Hello from Hanse!"] * 2
    assert {c["finish_reason"] for c in body["choices"]} == {"blueprint_override"}
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert body["billing_cost"] == {"energy": "0.0", "credits": "0.0", "paid_with": "energy"}
    impact = body["environment_impact"]
    assert (impact["energy_kwh"], impact["provider_id"], impact["location"]) == (0.0, "hanse", "DE")
    assert raw.headers["X-Hanse-Provider"] == "hanse"
    assert not scripted.received()
    row = ledger(gateway, "override-1")
    assert (row["status"], row["cost_pico"], row["route"]) == ("override", 0, None)


def test_no_match_goes_to_the_model(client: OpenAI, scripted: ScriptedUpstream) -> None:
    response = client.chat.completions.create(
        model=openai.omit,
        messages=[{"role": "user", "content": "Hello, where is my parcel?"}],
        extra_body={"blueprint_config": GREETER},
    )
    assert response.choices[0].finish_reason == "stop"
    assert len(scripted.received()) == 1


def test_override_streams_as_sse(gateway: GatewayProcess, client: OpenAI) -> None:
    key = client.api_key
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "blueprint_config": GREETER,
        },
        timeout=60,
    ) as response:
        assert response.status_code == 200
        events = sse_events(response.read().decode())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        assert_chunk(chunk)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello from Hanse!"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "blueprint_override"
    assert chunks[-1]["usage"]["total_tokens"] == 0
    assert chunks[-1]["environment_impact"]["provider_id"] == "hanse"
    assert chunks[-1]["billing_cost"]["credits"] == "0.0"


def test_the_sdk_stream_reads_an_override(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=openai.omit,
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        extra_body={"blueprint_config": GREETER},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Hello from Hanse!"
    )
    assert chunks[-1].choices[0].finish_reason == "blueprint_override"
