"""Structured output on models without native support: the schema in the prompt, validation, one repair.

A scripted upstream answers valid JSON, fenced JSON, prose then JSON on the repair, or prose forever,
and records every call, so the tests see the prompt, the repair and what reached the client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.harness import GatewayProcess, assert_schema, sse_events
from tests.upstream import JSON_ANSWER, PROSE_ANSWER, USAGE, ScriptedUpstream

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}
HELLO = [{"role": "user", "content": "Which city has the Elbphilharmonie?"}]


def _model(id_: str, caps: str, routes: list[tuple[str, str, str]]) -> str:
    text = f'[[models]]\nid = "{id_}"\ncontext_length = 4096\ncapabilities = {{ {caps} }}\n'
    for provider, upstream_model, extra in routes:
        text += f'[[models.routes]]\nprovider = "{provider}"\nupstream_model = "{upstream_model}"\n'
        text += extra
    return text + "\n"


def catalog(upstream_url: str) -> str:
    text = "[routing]\nspeed_smoothing = 0\n\n"
    for provider in ("up", "up2"):
        text += f'[[providers]]\nid = "{provider}"\nkind = "openai_compatible"\n'
        text += f'base_url = "{upstream_url}"\n\n'
    plain = "streaming = true"
    for behaviour in ("valid", "fenced", "repair", "never"):
        text += _model(f"json-{behaviour}", plain, [("up", f"json-{behaviour}", "")])
    text += _model("json-mode", "structured_output = true", [("up", "json-repair", "")])
    # Routes that claim to enforce the schema themselves: still checked after generation.
    native = "json_schema = true, structured_output = true"
    for behaviour in ("repair", "never"):
        text += _model(f"native-{behaviour}", native, [("up", f"json-{behaviour}", "")])
    # The fallback route comes first in the catalog; the native one must still be ranked first.
    text += _model(
        "mixed",
        "json_schema = true, structured_output = true",
        [("up", "json-valid", 'unsupported = ["json_schema"]\n'), ("up2", "json-valid", "")],
    )
    return text


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[GatewayProcess]:
    workdir = Path(tmp_path_factory.mktemp("structured"))
    process = GatewayProcess(workdir, config=catalog(upstream.base_url)).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _fresh(upstream: ScriptedUpstream) -> None:
    upstream.clear()


def post(gateway: GatewayProcess, key: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json={"messages": HELLO, "response_format": JSON_SCHEMA, **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_the_schema_goes_into_the_system_prompt(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, model="json-valid")
    assert response.status_code == 200, response.text
    assert response.headers["x-hanse-structured-output"] == "fallback"
    body = response.json()
    assert_schema("CreateChatCompletionResponse", body)
    assert json.loads(body["choices"][0]["message"]["content"]) == {"city": "Hamburg"}
    [received] = upstream.received()
    system = received.body["messages"][0]
    assert system["role"] == "system"
    assert json.dumps(SCHEMA) in system["content"]
    assert "response_format" not in received.body
    assert received.body["messages"][1:] == HELLO


def test_an_existing_system_message_gains_the_schema(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    messages = [{"role": "system", "content": "You are terse."}, *HELLO]
    assert post(gateway, api_key, model="json-valid", messages=messages).status_code == 200
    [received] = upstream.received()
    assert received.body["messages"][0]["content"].startswith("You are terse.\n\n")
    assert json.dumps(SCHEMA) in received.body["messages"][0]["content"]
    assert len(received.body["messages"]) == 2


def test_code_fences_are_removed(gateway: GatewayProcess, api_key: str) -> None:
    response = post(gateway, api_key, model="json-fenced")
    assert response.json()["choices"][0]["message"]["content"] == JSON_ANSWER


def test_an_invalid_answer_is_repaired_once(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, model="json-repair")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == JSON_ANSWER
    # Both calls are paid for, and counted.
    assert body["usage"]["prompt_tokens"] == 2 * USAGE["prompt_tokens"]
    assert body["usage"]["completion_tokens"] == 2 * USAGE["completion_tokens"]
    first, repair = upstream.received()
    assert repair.body["messages"][:-2] == first.body["messages"]
    assert repair.body["messages"][-2] == {"role": "assistant", "content": PROSE_ANSWER}
    assert "not valid JSON" in repair.body["messages"][-1]["content"]


def test_an_answer_that_stays_invalid_is_inference_3209(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, model="json-never")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "INFERENCE_3209"
    assert "not valid JSON" in error["details"]["problem"]
    assert len(upstream.received()) == 2  # the answer and one repair, no more


def test_a_route_with_json_mode_keeps_it(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, model="json-mode")
    assert response.status_code == 200, response.text
    assert response.headers["x-hanse-structured-output"] == "fallback"
    first = upstream.received()[0]
    assert first.body["response_format"] == {"type": "json_object"}
    assert json.dumps(SCHEMA) in first.body["messages"][0]["content"]


def test_json_object_without_support_uses_the_fallback(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, model="json-fenced", response_format={"type": "json_object"})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == JSON_ANSWER
    assert "one JSON object" in upstream.received()[0].body["messages"][0]["content"]


def test_native_routes_are_preferred(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, model="mixed")
    assert response.status_code == 200, response.text
    assert response.headers["x-hanse-provider"] == "up2"
    assert response.headers["x-hanse-structured-output"] == "native"
    [received] = upstream.received()
    assert received.body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert received.body["messages"] == HELLO


def test_a_stream_is_sent_once_the_answer_is_checked(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(
        gateway,
        api_key,
        model="json-repair",
        stream=True,
        stream_options={"include_usage": True},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-hanse-structured-output"] == "fallback"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == JSON_ANSWER
    assert chunks[-1]["usage"]["prompt_tokens"] == 2 * USAGE["prompt_tokens"]
    assert [r.body.get("stream") for r in upstream.received()] == [None, None]


def test_plain_text_has_no_header(gateway: GatewayProcess, api_key: str) -> None:
    response = post(gateway, api_key, model="json-valid", response_format={"type": "text"})
    assert response.status_code == 200
    assert "x-hanse-structured-output" not in response.headers


def test_through_the_sdk(gateway: GatewayProcess, api_key: str) -> None:
    client = OpenAI(base_url=f"{gateway.base_url}/v1", api_key=api_key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="json-repair",
        messages=HELLO,  # type: ignore[arg-type]
        response_format=JSON_SCHEMA,  # type: ignore[arg-type]
    )
    assert raw.headers["x-hanse-structured-output"] == "fallback"
    assert json.loads(raw.parse().choices[0].message.content or "") == {"city": "Hamburg"}


@pytest.mark.parametrize("ref", ["http://127.0.0.1:9/schema.json", "file:///etc/passwd"])
def test_a_schema_reference_outside_it_is_refused(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, ref: str
) -> None:
    schema = {"type": "object", "properties": {"city": {"$ref": ref}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    response = post(gateway, api_key, model="json-valid", response_format=fmt)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"].startswith("VALIDATION_")
    assert "inside the schema" in error["message"]
    assert upstream.received() == []


def test_a_native_route_that_misses_the_schema_is_asked_again(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, model="native-repair")
    assert response.status_code == 200, response.text
    assert response.headers["x-hanse-structured-output"] == "native"
    assert response.json()["choices"][0]["message"]["content"] == JSON_ANSWER
    first, again = upstream.received()
    assert first.body["response_format"]["type"] == "json_schema"  # enforced upstream, it said
    assert again.body["messages"][-2] == {"role": "assistant", "content": PROSE_ANSWER}


def test_a_native_route_that_stays_off_the_schema_is_inference_3209(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, model="native-never")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "INFERENCE_3209"
    assert len(upstream.received()) == 2


def test_a_native_stream_is_checked_when_it_ends(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    # The upstream claims to enforce the schema, then streams prose: the text is already out, so
    # the stream ends with INFERENCE_3209 instead of its finishing chunk.
    response = post(gateway, api_key, model="native-never", stream=True)
    assert response.status_code == 200, response.text
    assert response.headers["x-hanse-structured-output"] == "native"
    events = sse_events(response.text)
    chunks = [e for e in events if isinstance(e, dict) and "choices" in e]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks).startswith(
        "Lübeck"
    )
    assert not any(c["choices"][0].get("finish_reason") for c in chunks)
    [error] = [e["error"] for e in events if isinstance(e, dict) and "error" in e]
    assert error["code"] == "INFERENCE_3209"
    assert "not valid JSON" in error["message"]
    assert len(upstream.received()) == 1  # no second try in a stream


def test_a_native_stream_that_meets_the_schema_ends_normally(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    upstream.pieces = ['{"city": ', '"Hamburg"}']
    try:
        response = post(gateway, api_key, model="native-never", stream=True)
    finally:
        upstream.pieces = None
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == JSON_ANSWER
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
