"""The openai_compatible provider and failover in catalog order, against a scripted upstream.

Ranking, health and budgets are tested in test_routing.py; here every route of a model ranks the
same and speed measurements are off (`speed_smoothing = 0`), so routes are tried in catalog order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.harness import GatewayProcess, assert_schema, free_port, sse_events
from tests.upstream import ANSWER, FINGERPRINT, TOOL_ARGUMENTS, USAGE, ScriptedUpstream

SECRET = "sk-upstream-test-0123456789abcdef"
HELLO = [{"role": "user", "content": "Name three Hanseatic cities."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
BEHAVIOURS = (
    "ok",
    "tools",
    "fail-500",
    "rate-limit",
    "hang",
    "malformed",
    "bad-request",
    "content-filter",
    "cut-mid-stream",
    "ends-without-done",
    "stall-mid-stream",
    "unauthorized",
)
# Models whose first route fails (as the key says) and whose second route answers.
FAILOVER = {
    "failover-500": ("primary", "fail-500"),
    # Retry-After: 0, so the route is tried again on the next call (holds: test_routing.py).
    "failover-429": ("primary", "rate-limit-0"),
    "failover-hang": ("primary", "hang"),
    "failover-malformed": ("primary", "malformed"),
    "failover-401": ("primary", "unauthorized"),
    "failover-dead": ("dead", "ok"),
}
ALL_CAPS = "function_calling = true, vision = true, structured_output = true, json_schema = true"


def _provider(id_: str, base_url: str, key: bool = True) -> str:
    key_line = 'api_key_env = "UPSTREAM_TEST_KEY"\n' if key else ""
    return (
        f'[[providers]]\nid = "{id_}"\nkind = "openai_compatible"\nbase_url = "{base_url}"\n'
        f"{key_line}connect_timeout_s = 1\nread_timeout_s = 1\n\n"
    )


def _model(id_: str, routes: list[tuple[str, str]], capabilities: str = ALL_CAPS) -> str:
    text = f'[[models]]\nid = "{id_}"\ncontext_length = 4096\ncapabilities = {{ {capabilities} }}\n'
    for provider, upstream_model in routes:
        text += f'[[models.routes]]\nprovider = "{provider}"\nupstream_model = "{upstream_model}"\n'
    return text + "\n"


def catalog(upstream_url: str, dead_url: str) -> str:
    text = (
        "[routing]\nspeed_smoothing = 0\n\n"
        + _provider("primary", upstream_url)
        + _provider("backup", upstream_url)
    )
    text += _provider("keyless", upstream_url, key=False) + _provider("dead", dead_url)
    for behaviour in BEHAVIOURS:
        text += _model(f"up-{behaviour}", [("primary", behaviour)])
    for model, first in FAILOVER.items():
        text += _model(model, [first, ("backup", "ok")])
    text += _model("reject-first", [("primary", "bad-request"), ("backup", "ok")])
    text += _model("all-fail", [("primary", "fail-500"), ("backup", "unauthorized")])
    text += _model("all-rate-limited", [("primary", "rate-limit"), ("backup", "rate-limit")])
    text += _model("limited-then-500", [("primary", "rate-limit"), ("backup", "fail-500")])
    text += _model("500-then-hang", [("primary", "fail-500"), ("backup", "hang")])
    text += _model("keyless-ok", [("keyless", "ok")])
    text += _model("no-tools", [("primary", "ok")], "function_calling = false")
    text += _model("no-vision", [("primary", "ok")], "function_calling = true, vision = false")
    text += _model(
        "no-json-schema", [("primary", "ok")], "structured_output = true, json_schema = false"
    )
    return text


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[GatewayProcess]:
    config = catalog(upstream.base_url, f"http://127.0.0.1:{free_port()}/v1")
    workdir = Path(tmp_path_factory.mktemp("gateway"))
    process = GatewayProcess(workdir, config=config, env={"UPSTREAM_TEST_KEY": SECRET}).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _fresh_records(upstream: ScriptedUpstream) -> None:
    upstream.clear()


def post(gateway: GatewayProcess, api_key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"messages": HELLO, **body},
        timeout=30,
    )


def error_of(response: httpx.Response, upstream: ScriptedUpstream, status: int) -> dict[str, Any]:
    """The error object of a failed answer, checked for shape and for leaks."""
    assert response.status_code == status, response.text
    body = response.json()
    assert_schema("ErrorResponse", body)
    assert_no_leak(response.text, upstream)
    error: dict[str, Any] = body["error"]
    return error


def assert_no_leak(text: str, upstream: ScriptedUpstream) -> None:
    address = upstream.base_url.removeprefix("http://").removesuffix("/v1")
    assert SECRET not in text
    assert address not in text
    assert "http://" not in text


# Answers.


def test_plain_answer_is_relayed(client: OpenAI, upstream: ScriptedUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(model="up-ok", messages=HELLO)
    body = json.loads(raw.text)
    assert_schema("CreateChatCompletionResponse", body)
    completion = raw.parse()
    assert completion.model == "up-ok"
    assert completion.id.startswith("chatcmpl-") and completion.id != "chatcmpl-upstream"
    assert completion.system_fingerprint == FINGERPRINT
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.model_dump(include={"prompt_tokens", "completion_tokens"}) == {
        "prompt_tokens": USAGE["prompt_tokens"],
        "completion_tokens": USAGE["completion_tokens"],
    }
    assert completion.usage.total_tokens == USAGE["total_tokens"]
    assert raw.headers["x-hanse-provider"] == "primary"
    assert raw.headers["x-hanse-attempts"] == "1"
    [received] = upstream.received()
    assert received.path == "/v1/chat/completions"
    assert received.body["model"] == "ok"
    assert received.body["messages"] == HELLO
    assert "stream" not in received.body and "stream_options" not in received.body


def test_upstream_gets_its_own_key_not_the_clients(
    client: OpenAI, api_key: str, upstream: ScriptedUpstream
) -> None:
    client.chat.completions.create(model="up-ok", messages=HELLO)
    [received] = upstream.received()
    assert received.headers["Authorization"] == f"Bearer {SECRET}"
    assert api_key not in json.dumps(received.headers)


def test_provider_without_key_sends_no_authorization(
    client: OpenAI, upstream: ScriptedUpstream
) -> None:
    client.chat.completions.create(model="keyless-ok", messages=HELLO)
    [received] = upstream.received()
    assert "Authorization" not in received.headers


def test_request_parameters_are_forwarded(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    sent = {
        "model": "up-ok",
        "temperature": 0.3,
        "top_p": 0.9,
        "max_completion_tokens": 50,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "seed": 42,
        "stop": ["\n\n", "END"],
        "user": "user-17",
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": schema, "strict": True},
        },
    }
    upstream.behaviour = "json-valid"  # an answer that meets the schema the route enforces
    try:
        response = post(gateway, api_key, sent)
    finally:
        upstream.behaviour = None
    assert response.status_code == 200, response.text
    assert_schema("CreateChatCompletionResponse", response.json())
    [received] = upstream.received()
    body = received.body
    assert body["model"] == "ok"
    assert body["max_tokens"] == 50
    for name in (
        "temperature",
        "top_p",
        "frequency_penalty",
        "presence_penalty",
        "seed",
        "stop",
        "user",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    ):
        assert body[name] == sent[name], name


def test_single_stop_string_is_forwarded_as_a_list(
    client: OpenAI, upstream: ScriptedUpstream
) -> None:
    client.chat.completions.create(model="up-ok", messages=HELLO, stop="END")
    assert upstream.received()[0].body["stop"] == ["END"]


def test_tool_call_answer(client: OpenAI, upstream: ScriptedUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="up-tools", messages=HELLO, tools=[WEATHER_TOOL], tool_choice="required"
    )
    assert_schema("CreateChatCompletionResponse", json.loads(raw.text))
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.id == "call_up_1" and call.type == "function"
    assert call.function.name == "get_weather"
    assert call.function.arguments == TOOL_ARGUMENTS
    assert upstream.received()[0].body["tool_choice"] == "required"


# Streams.


def test_stream_is_relayed_with_usage(client: OpenAI, upstream: ScriptedUpstream) -> None:
    stream = client.chat.completions.create(
        model="up-ok", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert {c.model for c in chunks} == {"up-ok"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.system_fingerprint for c in chunks} == {FINGERPRINT}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        USAGE["prompt_tokens"],
        USAGE["completion_tokens"],
    )
    [received] = upstream.received()
    assert received.body["stream"] is True
    assert received.body["stream_options"] == {"include_usage": True}


def test_stream_wire_format_without_usage(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, {"model": "up-ok", "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-hanse-provider"] == "primary"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    for chunk in events[:-1]:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
        assert chunk["model"] == "up-ok"
        assert chunk["choices"]
        assert chunk.get("usage") is None
    # The gateway always asks for usage upstream, whatever the client asked.
    assert upstream.received()[0].body["stream_options"] == {"include_usage": True}


def test_streamed_tool_call_deltas(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(
        gateway,
        api_key,
        {
            "model": "up-tools",
            "stream": True,
            "tools": [WEATHER_TOOL],
            "stream_options": {"include_usage": True},
        },
    )
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    for chunk in events[:-1]:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
    pieces = [
        call
        for chunk in events[:-1]
        for choice in chunk["choices"]
        for call in choice["delta"].get("tool_calls") or []
    ]
    assert pieces[0]["id"] == "call_up_1" and pieces[0]["type"] == "function"
    assert pieces[0]["function"]["name"] == "get_weather"
    assert all(p["index"] == 0 for p in pieces)
    assert all("id" not in p for p in pieces[1:])
    assert "".join(p["function"]["arguments"] for p in pieces) == TOOL_ARGUMENTS
    finishes = [c["choices"][0]["finish_reason"] for c in events[:-1] if c["choices"]]
    assert finishes[-1] == "tool_calls"
    assert events[-2]["choices"] == [] and events[-2]["usage"]["total_tokens"] == 18


def test_streamed_tool_call_through_the_sdk(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="up-tools", messages=HELLO, tools=[WEATHER_TOOL], stream=True
    )
    chunks = list(stream)
    pieces = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert pieces[0].id == "call_up_1"
    assert pieces[0].function and pieces[0].function.name == "get_weather"
    assert "".join(p.function.arguments or "" for p in pieces if p.function) == TOOL_ARGUMENTS


# Upstream failures, as the client sees them.


@pytest.mark.parametrize("stream", [False, True])
def test_server_error_is_3103_with_attempts(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, stream: bool
) -> None:
    response = post(gateway, api_key, {"model": "up-fail-500", "stream": stream})
    error = error_of(response, upstream, 502)
    assert error["code"] == "INFERENCE_3103"
    assert error["type"] == "server_error"
    assert error["details"]["attempts"] == [{"route": "primary", "reason": "server", "status": 500}]
    assert "upstream exploded" not in response.text


def test_server_error_through_the_sdk(client: OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="up-fail-500", messages=HELLO)
    assert caught.value.status_code == 502
    assert caught.value.code == "INFERENCE_3103"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["details"]["attempts"][0]["status"] == 500


@pytest.mark.parametrize("stream", [False, True])
def test_rate_limit_is_3108_with_retry_after(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, stream: bool
) -> None:
    response = post(gateway, api_key, {"model": "up-rate-limit", "stream": stream})
    error = error_of(response, upstream, 429)
    assert error["code"] == "INFERENCE_3108"
    assert error["type"] == "rate_limit_error"
    assert response.headers["retry-after"] == "7"
    assert error["details"]["attempts"] == [
        {"route": "primary", "reason": "rate_limited", "status": 429}
    ]


def test_rate_limit_through_the_sdk(client: OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="up-rate-limit", messages=HELLO)
    assert caught.value.status_code == 429
    assert caught.value.code == "INFERENCE_3108"
    assert caught.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("stream", [False, True])
def test_hang_is_3107_after_the_read_timeout(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, stream: bool
) -> None:
    started = time.monotonic()
    response = post(gateway, api_key, {"model": "up-hang", "stream": stream})
    elapsed = time.monotonic() - started
    error = error_of(response, upstream, 504)
    assert error["code"] == "INFERENCE_3107"
    assert error["details"]["attempts"] == [
        {"route": "primary", "reason": "timeout", "status": None}
    ]
    assert 0.9 < elapsed < 4


def test_hang_through_the_sdk(client: OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="up-hang", messages=HELLO)
    assert caught.value.status_code == 504
    assert caught.value.code == "INFERENCE_3107"


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_answer_is_3103(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, stream: bool
) -> None:
    response = post(gateway, api_key, {"model": "up-malformed", "stream": stream})
    error = error_of(response, upstream, 502)
    assert error["code"] == "INFERENCE_3103"
    assert error["details"]["attempts"] == [
        {"route": "primary", "reason": "malformed", "status": None}
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_bad_request_is_3102_with_its_code_not_its_text(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, stream: bool
) -> None:
    response = post(gateway, api_key, {"model": "up-bad-request", "stream": stream})
    error = error_of(response, upstream, 400)
    assert error["code"] == "INFERENCE_3102"
    assert error["type"] == "invalid_request_error"
    assert error["message"] == "The provider rejected the request (HTTP 400, invalid_value)."
    assert error["details"] == {
        "provider_status": 400,
        "provider_code": "invalid_value",
        "provider_type": "invalid_request_error",
    }
    assert "spicy" not in response.text


def test_upstream_bad_request_through_the_sdk(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="up-bad-request", messages=HELLO)
    assert caught.value.status_code == 400
    assert caught.value.code == "INFERENCE_3102"
    assert "invalid_value" in caught.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_content_filter_is_3208(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, stream: bool
) -> None:
    response = post(gateway, api_key, {"model": "up-content-filter", "stream": stream})
    error = error_of(response, upstream, 400)
    assert error["code"] == "INFERENCE_3208"
    assert error["details"]["provider_code"] == "content_filter"
    assert "policy" not in response.text


def test_content_filter_through_the_sdk(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="up-content-filter", messages=HELLO)
    assert caught.value.code == "INFERENCE_3208"


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_unauthorized_is_3103_without_the_key(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, stream: bool
) -> None:
    response = post(gateway, api_key, {"model": "up-unauthorized", "stream": stream})
    error = error_of(response, upstream, 502)
    assert error["code"] == "INFERENCE_3103"
    assert error["details"]["attempts"] == [{"route": "primary", "reason": "auth", "status": 401}]
    assert "Incorrect API key" not in response.text


def test_cut_mid_stream_ends_with_an_error_event(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(
        gateway,
        api_key,
        {"model": "up-cut-mid-stream", "stream": True, "stream_options": {"include_usage": True}},
    )
    assert response.status_code == 200
    assert_no_leak(response.text, upstream)
    events = sse_events(response.text)
    assert "[DONE]" not in events
    *chunks, last = events
    for chunk in chunks:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "Lübeck, "]
    assert_schema("ErrorResponse", last)
    assert last["error"]["code"] == "INFERENCE_3103"
    assert last["error"]["details"]["attempts"][0]["route"] == "primary"


def test_stream_ending_unfinished_is_an_error_not_done(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, {"model": "up-ends-without-done", "stream": True})
    assert response.status_code == 200
    events = sse_events(response.text)
    assert "[DONE]" not in events
    assert [c["choices"][0]["delta"].get("content") for c in events[:-1]] == ["", "Lübeck, "]
    assert_schema("ErrorResponse", events[-1])
    assert events[-1]["error"]["code"] == "INFERENCE_3103"


def test_stall_mid_stream_ends_with_a_timeout_event(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, {"model": "up-stall-mid-stream", "stream": True})
    assert response.status_code == 200
    events = sse_events(response.text)
    assert "[DONE]" not in events
    assert len(events) == 3
    assert_schema("ErrorResponse", events[-1])
    assert events[-1]["error"]["code"] == "INFERENCE_3107"
    assert events[-1]["error"]["details"]["attempts"][0]["reason"] == "timeout"


def test_stall_mid_body_is_3107(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, {"model": "up-stall-mid-stream"})
    error = error_of(response, upstream, 504)
    assert error["code"] == "INFERENCE_3107"
    assert error["details"]["attempts"] == [
        {"route": "primary", "reason": "timeout", "status": None}
    ]


def test_cut_mid_stream_through_the_sdk(client: OpenAI) -> None:
    stream = client.chat.completions.create(model="up-cut-mid-stream", messages=HELLO, stream=True)
    received: list[str] = []

    def drain() -> None:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError) as caught:
        drain()
    assert received == ["", "Lübeck, "]
    assert caught.value.code == "INFERENCE_3103"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "INFERENCE_3103"


# Routing across a model's routes, in catalog order.


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", sorted(FAILOVER))
def test_failover_to_the_second_route(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, model: str, stream: bool
) -> None:
    response = post(gateway, api_key, {"model": model, "stream": stream})
    assert response.status_code == 200, response.text
    assert response.headers["x-hanse-provider"] == "backup"
    assert response.headers["x-hanse-attempts"] == "2"
    if stream:
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in events[:-1])
        assert text == ANSWER
    else:
        body = response.json()
        assert_schema("CreateChatCompletionResponse", body)
        assert body["model"] == model
        assert body["choices"][0]["message"]["content"] == ANSWER
    first_provider, first_upstream = FAILOVER[model]
    expected = ["ok"] if first_provider == "dead" else [first_upstream, "ok"]
    assert [r.body["model"] for r in upstream.received()] == expected


def test_failover_through_the_sdk(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="failover-500", messages=HELLO)
    assert raw.headers["x-hanse-provider"] == "backup"
    assert raw.headers["x-hanse-attempts"] == "2"
    assert raw.parse().choices[0].message.content == ANSWER


def test_client_errors_do_not_fail_over(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, {"model": "reject-first"})
    assert error_of(response, upstream, 400)["code"] == "INFERENCE_3102"
    assert [r.body["model"] for r in upstream.received()] == ["bad-request"]


def test_every_route_failed_lists_attempts_in_order(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, {"model": "all-fail"})
    error = error_of(response, upstream, 502)
    assert error["code"] == "INFERENCE_3103"
    assert error["details"]["attempts"] == [
        {"route": "primary", "reason": "server", "status": 500},
        {"route": "backup", "reason": "auth", "status": 401},
    ]
    assert [r.body["model"] for r in upstream.received()] == ["fail-500", "unauthorized"]


def test_every_route_rate_limited_is_3108(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, {"model": "all-rate-limited"})
    error = error_of(response, upstream, 429)
    assert error["code"] == "INFERENCE_3108"
    assert response.headers["retry-after"] == "7"
    assert [a["route"] for a in error["details"]["attempts"]] == ["primary", "backup"]


def test_rate_limit_then_server_error_is_3103(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, {"model": "limited-then-500"})
    error = error_of(response, upstream, 502)
    assert error["code"] == "INFERENCE_3103"
    assert [a["reason"] for a in error["details"]["attempts"]] == ["rate_limited", "server"]


def test_last_route_timing_out_is_3107(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, {"model": "500-then-hang"})
    error = error_of(response, upstream, 504)
    assert error["code"] == "INFERENCE_3107"
    assert [a["reason"] for a in error["details"]["attempts"]] == ["server", "timeout"]


# Capability checks: refused before any upstream is called.


def test_tools_on_a_model_without_function_calling(
    client: OpenAI, upstream: ScriptedUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="no-tools", messages=HELLO, tools=[WEATHER_TOOL])
    assert caught.value.status_code == 400
    assert caught.value.code == "INFERENCE_3202"
    assert caught.value.param == "tools"
    assert upstream.received() == []


def test_image_on_a_model_without_vision(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    response = post(
        gateway, api_key, {"model": "no-vision", "messages": [{"role": "user", "content": content}]}
    )
    error = error_of(response, upstream, 400)
    assert error["code"] == "INFERENCE_3201"
    assert upstream.received() == []


def test_json_schema_on_a_model_without_it(client: OpenAI, upstream: ScriptedUpstream) -> None:
    # The structured-output fallback (test_structured.py): prose is repaired once, then refused.
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="no-json-schema",
            messages=HELLO,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            },
        )
    assert (caught.value.status_code, caught.value.code) == (502, "INFERENCE_3209")
    first, repair = upstream.received()
    assert first.body["response_format"] == {"type": "json_object"}  # the model's JSON mode
    assert "JSON Schema" in first.body["messages"][0]["content"]
    assert len(repair.body["messages"]) == len(first.body["messages"]) + 2


def test_json_object_still_allowed_without_json_schema(
    client: OpenAI, upstream: ScriptedUpstream
) -> None:
    upstream.behaviour = "json-valid"  # the JSON object the route enforces (and Hanse checks)
    try:
        client.chat.completions.create(
            model="no-json-schema", messages=HELLO, response_format={"type": "json_object"}
        )
    finally:
        upstream.behaviour = None
    assert upstream.received()[0].body["response_format"] == {"type": "json_object"}


def test_upstream_secret_is_never_logged(gateway: GatewayProcess) -> None:
    # Runs last: by now every behaviour above has been through the gateway.
    log = gateway.log()
    assert "route primary failed" in log
    # The upstream's 401 echoed the key: its text is logged, the key blanked.
    assert "Incorrect API key provided: [redacted]" in log
    assert SECRET not in log
