"""What an openai_compatible route gives the client is faithful to the provider, and safe.

Against scripted upstreams that misbehave exactly so (`Canned` answers): upstream errors reach the
client sanitised, malformed answers are failed over (and never charged), Retry-After is bounded,
the provider's extra fields are relayed, messages go upstream in the compatible form, and a stream
commits to a route only with its first piece of answer. Routes are tried in catalog order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import GatewayProcess, assert_schema, sse_events
from tests.upstream import ANSWER, FINGERPRINT, USAGE, Canned, ScriptedUpstream

SECRET = "sk-fidelity-test-0123456789abcdef"
ADMIN = "fidelity-admin-token"
HELLO = [{"role": "user", "content": "Name three Hanseatic cities."}]
# What an upstream's error text may hold, none of which a client may see.
LEAKS = ("sk-leaked-0123456789", "10.9.8.7", "/srv/models", "Bearer", "Traceback")
LEAKY = (
    "Traceback: Authorization: Bearer sk-leaked-0123456789 rejected by 10.9.8.7 "
    "loading /srv/models/llama.gguf"
)
# The backup route is cheap, the primary dear: a charge for a failed primary attempt would show.
CHEAP = (Decimal(2), Decimal(3))
DEAR = (Decimal(1000), Decimal(1000))
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {
    "id": "call_fid_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Hamburg"}'},
}


def completion(
    message: dict[str, Any] | None = None,
    *,
    choices: Any = None,
    usage: Any = USAGE,
    **extra: Any,
) -> dict[str, Any]:
    """A chat.completion body: one choice saying `message`, unless `choices` replaces them."""
    if choices is None:
        assistant = {"role": "assistant", **(message or {})}
        choices = [{"index": 0, "message": assistant, "finish_reason": "stop"}]
    body = {"id": "up", "object": "chat.completion", "created": 1, "model": "m"}
    return body | {"choices": choices, "usage": usage, **extra}


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "up", "object": "chat.completion.chunk", "created": 1, "model": "m"} | {
        "choices": [choice],
        **extra,
    }


def error_body(code: str | None, type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": LEAKY, "type": type_, "param": "temperature", "code": code}}


ROLE = chunk({"role": "assistant", "content": ""})
USAGE_CHUNK = {"id": "up", "object": "chat.completion.chunk", "created": 1, "choices": []} | {
    "model": "m",
    "usage": USAGE,
}
HTML = b"<html><body><h1>502 Bad Gateway</h1><p>nginx at 10.9.8.7 /srv/models</p></body></html>"

# Upstream errors: the canned answer, and the HTTP status and code the client gets.
ERRORS: dict[str, tuple[Canned, int, str]] = {
    "e400": (Canned(400, error_body("invalid_value")), 400, "INFERENCE_3102"),
    "e400-odd-code": (
        Canned(400, error_body("x sk-leaked-0123456789", "x")),
        400,
        "INFERENCE_3102",
    ),
    "e401": (
        Canned(401, error_body("invalid_api_key", "authentication_error")),
        502,
        "INFERENCE_3103",
    ),
    "e403": (Canned(403, error_body(None, "permission_error")), 502, "INFERENCE_3103"),
    "e404": (Canned(404, error_body("model_not_found")), 502, "INFERENCE_3103"),
    "e408": (Canned(408, error_body(None)), 502, "INFERENCE_3103"),
    "e413": (Canned(413, error_body(None)), 400, "INFERENCE_3102"),
    "e422": (Canned(422, {"detail": [{"msg": LEAKY, "loc": ["body"]}]}), 400, "INFERENCE_3102"),
    "e429": (Canned(429, error_body(None, "rate_limit_error")), 429, "INFERENCE_3108"),
    "e500": (Canned(500, error_body(None, "server_error")), 502, "INFERENCE_3103"),
    "e503": (Canned(503, HTML, content_type="text/html"), 502, "INFERENCE_3103"),
    "e400-html": (Canned(400, HTML, content_type="text/html"), 400, "INFERENCE_3102"),
    "e400-filter": (Canned(400, error_body("content_filter")), 400, "INFERENCE_3208"),
    "e400-overflow": (Canned(400, error_body("context_length_exceeded")), 400, "INFERENCE_3207"),
}
# Answers that are the provider's failure: each first route below fails over to the backup.
MALFORMED: dict[str, Canned] = {
    "choices-not-a-list": Canned(body=completion(choices="not-a-list")),
    "choices-strings": Canned(body=completion(choices=["abc"])),
    "index-huge": Canned(body=completion(choices=[{"index": 10**30, "message": {}}])),
    "index-negative": Canned(body=completion(choices=[{"index": -1, "message": {}}])),
    "tool-calls-not-a-list": Canned(body=completion({"tool_calls": "get_weather"})),
    "tool-call-shape": Canned(body=completion({"tool_calls": [{"function": "get_weather"}]})),
    "usage-negative": Canned(body=completion({"content": "x"}, usage={"prompt_tokens": -50})),
    "usage-fraction": Canned(body=completion({"content": "x"}, usage={"prompt_tokens": 1.5})),
    "usage-absurd": Canned(body=completion({"content": "x"}, usage={"completion_tokens": 10**12})),
    "usage-text": Canned(body=completion({"content": "x"}, usage={"prompt_tokens": "11"})),
    "not-json": Canned(body=HTML, content_type="text/html"),
    "chunk-not-json": Canned(body=HTML, events=[b"{not json"]),
    "chunk-choices-not-a-list": Canned(body=HTML, events=[{"choices": "x"}]),
    "chunk-index-huge": Canned(
        body=HTML, events=[chunk({"content": "x"}) | {"choices": [{"index": 10**30}]}]
    ),
    "chunk-tool-call-shape": Canned(
        body=HTML, events=[chunk({"tool_calls": [{"index": "first"}]})]
    ),
    # Streams that never commit the route: nothing, a role only, a role then a cut or an error.
    "stream-empty": Canned(body=HTML, events=[]),
    "stream-role-only": Canned(body=HTML, events=[ROLE, USAGE_CHUNK]),
    "stream-role-then-cut": Canned(body=HTML, events=[ROLE], cut=True),
    "stream-role-then-error": Canned(body=HTML, events=[ROLE, error_body(None, "server_error")]),
}
# Retry-After values (`rate-limit-<v>` is a scripted behaviour) and what the client is told.
RETRY_AFTER = {"inf": None, "nan": None, "-5": None, "1e12": "3600", "0.2": "1"}
REASONING = "The Hanse traded on the Baltic."
LOGPROBS = {
    "content": [{"token": "Lü", "logprob": -0.1, "bytes": [76, 195, 188], "top_logprobs": []}]
}
DETAILED_USAGE = USAGE | {
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 3},
}
RICH_DELTAS: list[tuple[dict[str, Any], str | None]] = [
    ({"role": "assistant", "content": None, "reasoning_content": ""}, None),
    ({"reasoning_content": REASONING[:10]}, None),
    ({"reasoning_content": REASONING[10:]}, None),
    ({"content": ANSWER}, None),
    ({}, "stop"),
]
RELAYED: dict[str, Canned] = {
    "rich": Canned(
        body=completion(
            choices=[
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": ANSWER,
                        "reasoning_content": REASONING,
                    },
                    "finish_reason": "stop",
                    "logprobs": LOGPROBS,
                }
            ],
            usage=DETAILED_USAGE,
            service_tier="default",
            system_fingerprint=FINGERPRINT,
        ),
        events=[chunk(delta, finish, service_tier="default") for delta, finish in RICH_DELTAS]
        + [USAGE_CHUNK | {"usage": DETAILED_USAGE}],
    ),
    "openrouter": Canned(
        body=completion({"content": ANSWER, "reasoning": REASONING}, service_tier="on_demand"),
        events=[
            ROLE,
            chunk({"reasoning": REASONING}),
            chunk({"content": ANSWER}, "stop"),
            USAGE_CHUNK,
        ],
    ),
    "refusal": Canned(
        body=completion({"content": None, "refusal": "I cannot help with that."}),
        events=[ROLE, chunk({"refusal": "I cannot help with that."}, "stop"), USAGE_CHUNK],
    ),
    "tools-empty-content": Canned(
        body=completion(
            choices=[
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "", "tool_calls": [CALL]},
                    "finish_reason": "tool_calls",
                }
            ],
        )
    ),
    "tools-without-id": Canned(
        body=HTML,
        events=[
            chunk({"role": "assistant", "tool_calls": [{"index": 0, "function": {"name": "f"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}, "tool_calls"),
        ],
    ),
    "no-usage": Canned(body={"choices": [{"index": 0, "message": {"content": ANSWER}}]}),
}


def _provider(id_: str, base_url: str, extra: str = "") -> str:
    return (
        f'[[providers]]\nid = "{id_}"\nkind = "openai_compatible"\nbase_url = "{base_url}"\n'
        f'api_key_env = "UPSTREAM_TEST_KEY"\nconnect_timeout_s = 1\nread_timeout_s = 2\n{extra}\n'
    )


def _model(id_: str, routes: list[tuple[str, str, tuple[Decimal, Decimal]]]) -> str:
    text = (
        f'[[models]]\nid = "{id_}"\ncontext_length = 4096\n'
        "capabilities = { function_calling = true }\n"
    )
    for provider, upstream_model, (price_in, price_out) in routes:
        text += (
            f'[[models.routes]]\nprovider = "{provider}"\nupstream_model = "{upstream_model}"\n'
            f'input_eur_per_million = "{price_in}"\noutput_eur_per_million = "{price_out}"\n'
        )
    return text + "\n"


def catalog(base_url: str) -> str:
    text = "[routing]\nspeed_smoothing = 0\nbreaker_failures = 3\nbreaker_cooldown_s = 600\n\n"
    text += _provider("primary", base_url) + _provider("backup", base_url)
    text += _provider("modern", base_url, 'wire_form = "modern"')
    for name in [*ERRORS, *RELAYED, "retry-date", "retry-past"]:
        text += _model(f"f-{name}", [("primary", name, CHEAP)])
    for name in MALFORMED:
        text += _model(f"fo-{name}", [("primary", name, DEAR), ("backup", "ok", CHEAP)])
    for value in RETRY_AFTER:
        text += _model(f"ra-{value}", [("primary", f"rate-limit-{value}", CHEAP)])
        text += _model(
            f"fo-ra-{value}", [("primary", f"rate-limit-{value}", DEAR), ("backup", "ok", CHEAP)]
        )
    text += _model("f-ok", [("primary", "ok", CHEAP)]) + _model(
        "f-tools", [("primary", "tools", CHEAP)]
    )
    text += _model("m-ok", [("modern", "ok", CHEAP)])
    for name in ("flip-client", "flip-server"):
        text += _model(name, [("primary", name, CHEAP), ("backup", "ok", CHEAP)])
    return text


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream()
    server.canned.update({name: canned for name, (canned, _, _) in ERRORS.items()})
    server.canned.update(MALFORMED | RELAYED)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[GatewayProcess]:
    env = {"UPSTREAM_TEST_KEY": SECRET, "HANSE_ADMIN_TOKEN": ADMIN}
    workdir = Path(tmp_path_factory.mktemp("fidelity"))
    process = GatewayProcess(workdir, config=catalog(upstream.base_url), env=env).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _fresh_records(upstream: ScriptedUpstream) -> None:
    upstream.clear()


def post(gateway: GatewayProcess, key: str, body: dict[str, Any]) -> httpx.Response:
    # In catalog order, whatever the prices: the dear primary first.
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"messages": HELLO, "provider": {"order": ["primary", "backup"]}, **body},
        timeout=30,
    )


def admin(gateway: GatewayProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    return httpx.request(
        method, f"{gateway.base_url}/admin{path}", headers=headers, timeout=30, **kwargs
    )


def account(gateway: GatewayProcess, name: str) -> str:
    """A fresh account with 100 EUR of credits: its key."""
    created = admin(gateway, "POST", "/accounts", json={"name": name, "plan": "credits_only"})
    assert created.status_code == 201, created.text
    topup = {"credits": "100", "energy": "0"}
    assert admin(gateway, "POST", f"/accounts/{name}/topup", json=topup).status_code == 200
    return gateway.create_key(account=name)


def credits(gateway: GatewayProcess, name: str) -> Decimal:
    return Decimal(admin(gateway, "GET", f"/accounts/{name}").json()["balances"]["credits"])


def price(prices: tuple[Decimal, Decimal], usage: dict[str, int]) -> Decimal:
    return (usage["prompt_tokens"] * prices[0] + usage["completion_tokens"] * prices[1]) / 10**6


def stream_text(events: list[Any], field: str = "content") -> str:
    return "".join(
        choice["delta"].get(field) or ""
        for event in events
        if isinstance(event, dict)
        for choice in event.get("choices", [])
    )


def assert_clean(response: httpx.Response, upstream: ScriptedUpstream) -> None:
    for leak in (*LEAKS, SECRET, upstream.base_url.removeprefix("http://")):
        assert leak not in response.text, leak


@pytest.fixture(scope="module")
def key(gateway: GatewayProcess) -> str:
    return account(gateway, "fidelity")


# 1. Upstream errors: the status and a known code, never the provider's text.


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", sorted(ERRORS))
def test_upstream_error_is_sanitised(
    gateway: GatewayProcess, key: str, upstream: ScriptedUpstream, name: str, stream: bool
) -> None:
    canned, status, code = ERRORS[name]
    response = post(gateway, key, {"model": f"f-{name}", "stream": stream})
    assert response.status_code == status, response.text
    assert_schema("ErrorResponse", response.json())
    assert_clean(response, upstream)
    error = response.json()["error"]
    assert error["code"] == code
    if code == "INFERENCE_3207":  # worded as OpenAI's, which LiteLLM and LangChain match on
        assert "This model's maximum context length is" in error["message"]
        assert "context_length_exceeded" in error["message"]
        assert error["param"] == "messages"
    if code in ("INFERENCE_3102", "INFERENCE_3208", "INFERENCE_3207"):
        assert error["details"]["provider_status"] == canned.status
        assert "provider_message" not in error["details"]
    else:
        assert error["details"]["attempts"][0]["status"] == canned.status


def test_known_code_type_and_param_are_kept(gateway: GatewayProcess, key: str) -> None:
    error = post(gateway, key, {"model": "f-e400"}).json()["error"]
    assert error["message"] == "The provider rejected the request (HTTP 400, invalid_value)."
    assert error["param"] == "temperature"
    assert error["details"] == {
        "provider_status": 400,
        "provider_code": "invalid_value",
        "provider_type": "invalid_request_error",
        "provider_param": "temperature",
    }
    odd = post(gateway, key, {"model": "f-e400-odd-code"}).json()["error"]
    assert odd["details"] == {"provider_status": 400, "provider_param": "temperature"}


def test_upstream_error_text_is_logged_without_secrets(gateway: GatewayProcess, key: str) -> None:
    post(gateway, key, {"model": "f-e400"})
    log = gateway.log()
    assert "answered HTTP 400 (code invalid_value)" in log
    assert "10.9.8.7" in log  # the operator still sees what the provider said
    assert "sk-leaked-0123456789" not in log
    assert SECRET not in log


# 2. Malformed answers: failed over, never a 500, never charged.


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_answer_fails_over_uncharged(
    gateway: GatewayProcess, key: str, upstream: ScriptedUpstream, name: str, stream: bool
) -> None:
    before = credits(gateway, "fidelity")
    body: dict[str, Any] = {"model": f"fo-{name}", "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    response = post(gateway, key, body)
    assert response.status_code == 200, response.text
    assert response.headers["x-hanse-provider"] == "backup"
    assert response.headers["x-hanse-attempts"] == "2"
    if stream:
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        for event in events[:-1]:
            assert_schema("CreateChatCompletionStreamResponse", event)
        assert stream_text(events) == ANSWER
        charged = Decimal(events[-2]["billing_cost"]["credits"])
    else:
        body = response.json()
        assert_schema("CreateChatCompletionResponse", body)
        assert body["choices"][0]["message"]["content"] == ANSWER
        charged = Decimal(body["billing_cost"]["credits"])
    assert charged == price(CHEAP, USAGE)
    assert credits(gateway, "fidelity") == before - charged
    assert [r.body["model"] for r in upstream.received()] == [name, "ok"]


@pytest.mark.parametrize("name", ["usage-negative", "not-json", "index-huge"])
def test_malformed_answer_alone_is_3103_malformed(
    gateway: GatewayProcess, key: str, name: str
) -> None:
    # The same answers on a route of their own: the client learns the attempt was malformed.
    response = post(gateway, key, {"model": f"fo-{name}", "provider": {"only": ["primary"]}})
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "INFERENCE_3103"
    assert error["details"]["attempts"] == [
        {"route": "primary", "reason": "malformed", "status": None}
    ]


# 2-3. Retry-After: impossible values are ignored, huge ones bounded, HTTP dates honoured.


@pytest.mark.parametrize("value", sorted(RETRY_AFTER))
def test_retry_after_is_bounded(gateway: GatewayProcess, key: str, value: str) -> None:
    response = post(gateway, key, {"model": f"ra-{value}"})
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "INFERENCE_3108"
    assert response.headers.get("retry-after") == RETRY_AFTER[value]
    failover = post(gateway, key, {"model": f"fo-ra-{value}"})
    assert failover.status_code == 200, failover.text
    assert failover.headers["x-hanse-provider"] == "backup"


def test_retry_after_http_date_is_honoured(
    gateway: GatewayProcess, key: str, upstream: ScriptedUpstream
) -> None:
    for name, offset in (("retry-date", 600), ("retry-past", -600)):
        date = formatdate(time.time() + offset, usegmt=True)
        rate_limit = error_body(None, "rate_limit_error")
        upstream.canned[name] = Canned(429, rate_limit, headers={"Retry-After": date})
    response = post(gateway, key, {"model": "f-retry-date"})
    assert response.status_code == 429
    assert 590 <= int(response.headers["retry-after"]) <= 600
    past = post(gateway, key, {"model": "f-retry-past"})
    assert past.status_code == 429
    assert past.headers["retry-after"] == "1"


# 4. What the provider says besides the answer is relayed.


def test_reasoning_usage_details_tier_and_logprobs_are_relayed(
    gateway: GatewayProcess, key: str
) -> None:
    response = post(gateway, key, {"model": "f-rich", "logprobs": True})
    body = response.json()
    assert_schema("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    assert message["content"] == ANSWER
    assert message["reasoning_content"] == message["reasoning"] == REASONING
    assert message["refusal"] is None
    assert body["choices"][0]["logprobs"]["content"] == LOGPROBS["content"]
    assert body["service_tier"] == "default"
    assert body["system_fingerprint"] == FINGERPRINT
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 4
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    assert body["usage"]["total_tokens"] == USAGE["total_tokens"]


def test_reasoning_and_usage_details_are_streamed(gateway: GatewayProcess, key: str) -> None:
    response = post(
        gateway,
        key,
        {"model": "f-rich", "stream": True, "stream_options": {"include_usage": True}},
    )
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        assert_schema("CreateChatCompletionStreamResponse", event)
    assert stream_text(events, "reasoning_content") == stream_text(events, "reasoning") == REASONING
    assert stream_text(events) == ANSWER
    opening = events[0]["choices"][0]["delta"]
    assert opening["role"] == "assistant" and opening["content"] is None
    assert {e.get("service_tier") for e in events[:-1]} == {"default"}
    usage = events[-2]["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 4
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 3


@pytest.mark.parametrize("stream", [False, True])
def test_openrouter_reasoning_is_relayed_under_both_names(
    gateway: GatewayProcess, key: str, stream: bool
) -> None:
    response = post(gateway, key, {"model": "f-openrouter", "stream": stream})
    if stream:
        events = sse_events(response.text)
        assert stream_text(events, "reasoning_content") == REASONING
        assert stream_text(events, "reasoning") == REASONING
        assert stream_text(events) == ANSWER
    else:
        body = response.json()
        assert_schema("CreateChatCompletionResponse", body)
        assert body["choices"][0]["message"]["reasoning"] == REASONING
        assert body["choices"][0]["message"]["reasoning_content"] == REASONING
        assert "service_tier" not in body  # not one of OpenAI's tiers: not relayed


@pytest.mark.parametrize("stream", [False, True])
def test_refusal_is_relayed(gateway: GatewayProcess, key: str, stream: bool) -> None:
    response = post(gateway, key, {"model": "f-refusal", "stream": stream})
    assert response.status_code == 200, response.text
    if stream:
        events = sse_events(response.text)
        for event in events[:-1]:
            assert_schema("CreateChatCompletionStreamResponse", event)
        assert stream_text(events, "refusal") == "I cannot help with that."
    else:
        message = response.json()["choices"][0]["message"]
        assert (message["content"], message["refusal"]) == (None, "I cannot help with that.")


def test_answer_without_usage_is_served(gateway: GatewayProcess, key: str) -> None:
    response = post(gateway, key, {"model": "f-no-usage"})
    assert response.status_code == 200, response.text
    assert_schema("CreateChatCompletionResponse", response.json())
    assert response.json()["choices"][0]["message"]["content"] == ANSWER


# 5. OpenAI's shape beside tool calls.


def test_content_is_null_beside_tool_calls(gateway: GatewayProcess, key: str) -> None:
    body = post(gateway, key, {"model": "f-tools-empty-content", "tools": [TOOL]}).json()
    assert_schema("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["id"] == "call_fid_1"


def test_tool_only_stream_never_sends_empty_content(gateway: GatewayProcess, key: str) -> None:
    response = post(gateway, key, {"model": "f-tools", "tools": [TOOL], "stream": True})
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    deltas = [choice["delta"] for event in events[:-1] for choice in event["choices"]]
    assert deltas[0] == {"role": "assistant", "content": None, "refusal": None}
    assert all(delta.get("content") is None for delta in deltas)
    assert any(delta.get("tool_calls") for delta in deltas)


def test_streamed_tool_call_without_an_id_gets_one(gateway: GatewayProcess, key: str) -> None:
    response = post(gateway, key, {"model": "f-tools-without-id", "tools": [TOOL], "stream": True})
    events = sse_events(response.text)
    for event in events[:-1]:
        assert_schema("CreateChatCompletionStreamResponse", event)
    calls = [
        c for e in events[:-1] for ch in e["choices"] for c in ch["delta"].get("tool_calls", [])
    ]
    assert calls[0]["id"].startswith("call_") and calls[0]["function"]["name"] == "f"
    assert "id" not in calls[1] and calls[1]["function"]["arguments"] == "{}"


def test_text_stream_opens_with_empty_content(gateway: GatewayProcess, key: str) -> None:
    events = sse_events(post(gateway, key, {"model": "f-ok", "stream": True}).text)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert stream_text(events) == ANSWER


# 6. Interop: the compatible form upstream by default, the modern one where configured.

MODERN_MESSAGES: list[dict[str, Any]] = [
    {"role": "developer", "content": "Answer briefly."},
    {
        "role": "user",
        "content": [{"type": "text", "text": "Weather"}, {"type": "text", "text": "in Hamburg?"}],
    },
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_fid_1", "content": [{"type": "text", "text": "Rain."}]},
]


def test_messages_go_upstream_in_the_compatible_form(
    gateway: GatewayProcess, key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, key, {"model": "f-ok", "messages": MODERN_MESSAGES, "tools": [TOOL]})
    assert response.status_code == 200, response.text
    [received] = upstream.received()
    assert received.body["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Weather\nin Hamburg?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_fid_1", "content": "Rain."},
    ]


def test_modern_wire_form_sends_messages_as_they_are(
    gateway: GatewayProcess, key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, key, {"model": "m-ok", "messages": MODERN_MESSAGES, "tools": [TOOL]})
    assert response.status_code == 200, response.text
    sent = upstream.received()[0].body["messages"]
    assert [m["role"] for m in sent] == ["developer", "user", "assistant", "tool"]
    assert sent[1]["content"] == MODERN_MESSAGES[1]["content"]
    assert sent[2].get("content") is None and sent[2]["tool_calls"] == [CALL]
    assert sent[3]["content"] == MODERN_MESSAGES[3]["content"]


def test_client_errors_never_trip_the_breaker(
    gateway: GatewayProcess, key: str, upstream: ScriptedUpstream
) -> None:
    # breaker_failures = 3: three 5xx open the primary route, three (or more) 400s do not.
    upstream.canned["flip-client"] = ERRORS["e400"][0]
    upstream.canned["flip-server"] = ERRORS["e500"][0]
    for _ in range(4):
        assert post(gateway, key, {"model": "flip-client"}).status_code == 400
        assert post(gateway, key, {"model": "flip-server"}).headers["x-hanse-provider"] == "backup"
    del upstream.canned["flip-client"], upstream.canned["flip-server"]
    healthy = post(gateway, key, {"model": "flip-client"})
    assert (healthy.status_code, healthy.headers["x-hanse-provider"]) == (200, "primary")
    opened = post(gateway, key, {"model": "flip-server"})
    assert (opened.status_code, opened.headers["x-hanse-provider"]) == (200, "backup")
    assert opened.headers["x-hanse-attempts"] == "1"
