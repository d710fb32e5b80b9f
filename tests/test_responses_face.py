"""The OpenAI Responses face over a scripted upstream: what reaches the provider for each input
item and parameter, how its answer comes back (reasoning, function calls, incomplete), typed stream
events with sequence numbers, failures as `response.failed`, money exact against the ledger, and
hostile bodies refused while others are served."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.harness import GatewayProcess, billed_pico, png_base64, sse_events
from tests.upstream import Canned, ScriptedUpstream

MODEL = "rich"
STREAM_EVENT: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)
CAPS = "function_calling = true, vision = true, file_input = true, json_schema = true, reasoning = true"
UP = {"id": "up", "object": "chat.completion", "created": 1, "model": "m"}
USAGE = {
    "prompt_tokens": 40,
    "completion_tokens": 30,
    "total_tokens": 70,
    "prompt_tokens_details": {"cached_tokens": 10},
    "completion_tokens_details": {"reasoning_tokens": 5},
}
THOUGHT = {"role": "assistant", "content": "Hamburg.", "reasoning_content": "Think."}
CANNED = {
    "thinker": Canned(
        body=UP
        | {"choices": [{"index": 0, "message": THOUGHT, "finish_reason": "stop"}], "usage": USAGE},
        events=[
            UP
            | {
                "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Th"}}]
            },
            UP | {"choices": [{"index": 0, "delta": {"reasoning_content": "ink."}}]},
            UP | {"choices": [{"index": 0, "delta": {"content": "Ham"}}]},
            UP
            | {"choices": [{"index": 0, "delta": {"content": "burg."}, "finish_reason": "length"}]},
            UP | {"choices": [], "usage": USAGE},
        ],
    ),
    "cut": Canned(
        events=[UP | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Ham"}}]}],
        cut=True,
    ),
}
PRICE = 40 * 2_000_000 + 30 * 3_000_000  # pico-euros: 2 and 3 EUR per million tokens


def catalog(base_url: str) -> str:
    text = f'[[providers]]\nid = "up"\nkind = "openai_compatible"\nbase_url = "{base_url}"\n\n'
    for name, upstream_model in ((MODEL, "ok"), ("thinking", "thinker"), ("breaks", "cut")):
        text += f'[[models]]\nid = "{name}"\ncontext_length = 8192\ncapabilities = {{ {CAPS} }}\n'
        text += f'[[models.routes]]\nprovider = "up"\nupstream_model = "{upstream_model}"\n'
        text += 'input_eur_per_million = "2"\noutput_eur_per_million = "3"\n\n'
    return text


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream()
    server.canned.update(CANNED)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[GatewayProcess]:
    workdir = Path(tmp_path_factory.mktemp("responses-face"))
    process = GatewayProcess(workdir, config=catalog(upstream.base_url)).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api_key(gateway: GatewayProcess) -> str:
    key = gateway.create_key(account="agents")
    topup = gateway.cli("accounts", "topup", "agents", "--credits", "10")
    assert topup.returncode == 0, topup.stderr
    return key


@pytest.fixture(autouse=True)
def _fresh(upstream: ScriptedUpstream) -> Iterator[None]:
    upstream.clear()
    yield
    upstream.behaviour = None


def post(gateway: GatewayProcess, key: str, **body: Any) -> httpx.Response:
    fields = {"model": MODEL, "input": "Hi", "max_output_tokens": 20}
    return httpx.post(
        f"{gateway.base_url}/v1/responses",
        headers={"Authorization": f"Bearer {key}"},
        json=fields | body,
        timeout=60,
    )


def forwarded(upstream: ScriptedUpstream) -> dict[str, Any]:
    [received] = upstream.received()
    return received.body


def test_items_and_parameters_reach_the_provider_in_chat_shape(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    pdf = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4").decode()
    items = [
        {"role": "developer", "content": "Be brief."},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Look:"},
                {
                    "type": "input_image",
                    "image_url": "data:image/png;base64," + png_base64(),
                    "detail": "low",
                },
                {"type": "input_file", "file_data": pdf, "filename": "cities.pdf"},
            ],
        },
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
        },
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Kiel"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "11"},
    ]
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    upstream.behaviour = "json-valid"
    response = post(
        gateway,
        api_key,
        input=items,
        instructions="You are Hanse.",
        tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        tool_choice="auto",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
        reasoning={"effort": "high"},
        temperature=0.3,
        parallel_tool_calls=False,
        metadata={"run": "7"},
    )
    assert response.status_code == 200, response.text
    sent = forwarded(upstream)
    assert [m["role"] for m in sent["messages"]] == [
        "system",
        "system",
        "user",
        "assistant",
        "tool",
    ]
    assert sent["messages"][0]["content"] == "You are Hanse."
    parts = sent["messages"][2]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "file"]
    assert parts[2]["file"] == {"file_data": pdf, "filename": "cities.pdf"}
    assistant = sent["messages"][3]
    assert assistant["content"] == "Checking."  # the reasoning item stays behind
    assert assistant["tool_calls"][0]["id"] == "call_1"
    assert sent["messages"][4] == {"role": "tool", "tool_call_id": "call_1", "content": "11"}
    assert sent["response_format"]["json_schema"]["schema"] == schema
    assert (sent["reasoning_effort"], sent["temperature"]) == ("high", 0.3)
    assert sent["max_tokens"] == 20 and sent["parallel_tool_calls"] is False
    body = response.json()
    Response.model_validate(body)
    assert body["metadata"] == {"run": "7"} and body["instructions"] == "You are Hanse."
    assert json.loads(body["output"][0]["content"][0]["text"]) == {"city": "Hamburg"}


def test_reasoning_is_an_output_item_and_money_is_exact(
    gateway: GatewayProcess, api_key: str
) -> None:
    body = post(gateway, api_key, model="thinking").json()
    response = Response.model_validate(body)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert body["output"][0]["content"] == [{"type": "reasoning_text", "text": "Think."}]
    assert response.output_text == "Hamburg." and response.status == "completed"
    assert body["usage"]["input_tokens_details"]["cached_tokens"] == 10
    assert body["usage"]["output_tokens_details"]["reasoning_tokens"] == 5
    assert billed_pico(body) == gateway.last_cost_pico() == PRICE


def test_a_stream_has_typed_events_in_order_and_ends_incomplete_when_cut(
    gateway: GatewayProcess, api_key: str
) -> None:
    events = sse_events(post(gateway, api_key, model="thinking", stream=True).text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    for event in events:
        STREAM_EVENT.validate_python(event)  # each as the SDK's own types read it
    final = events[-1]["response"]
    Response.model_validate(final)
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[11]["text"] == "Hamburg." and events[5]["text"] == "Think."
    assert billed_pico(final) == gateway.last_cost_pico() == PRICE
    stored = httpx.get(
        f"{gateway.base_url}/v1/responses/{final['id']}",
        headers={"Authorization": f"Bearer {api_key}"},
    ).json()
    assert stored["output"] == final["output"] and stored["status"] == "incomplete"


def test_function_calls_stream_their_arguments(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    upstream.behaviour = "tools"
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    body = post(gateway, api_key, tools=tools).json()
    call = body["output"][-1]
    assert call["type"] == "function_call" and json.loads(call["arguments"]) == {"city": "Hamburg"}
    events = sse_events(post(gateway, api_key, tools=tools, stream=True).text)
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["type"] == "function_call" and added["item"]["arguments"] == ""
    pieces = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert "".join(pieces) == done["arguments"] and json.loads(done["arguments"]) == {
        "city": "Hamburg"
    }
    assert events[-1]["type"] == "response.completed"


def test_a_stream_that_breaks_ends_with_response_failed(
    gateway: GatewayProcess, api_key: str
) -> None:
    events = sse_events(post(gateway, api_key, model="breaks", stream=True).text)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["code"] == events[-1]["response"]["error"]["code"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"].startswith("INFERENCE_")
    assert failed["output"][0]["content"][0]["text"] == "Ham"  # what was sent is kept
    [row] = gateway.sql("SELECT status FROM ledger ORDER BY id DESC LIMIT 1")
    assert row["status"] == "cut"


def test_unsupported_and_invalid_input_is_refused_by_name(
    gateway: GatewayProcess, api_key: str
) -> None:
    cases = {
        "item type": (
            {"input": [{"type": "item_reference", "id": "x"}]},
            "VALIDATION_4008",
            "input[0].type",
        ),
        "item field": (
            {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "VALIDATION_4006",
            "input[0].call_id",
        ),
        "tool type": ({"tools": [{"type": "file_search"}]}, "VALIDATION_4008", "tools[0].type"),
        "unknown": ({"frobnicate": True}, "VALIDATION_4007", "frobnicate"),
        "no input": ({"input": None}, "VALIDATION_4002", "input"),
        "previous": (
            {"previous_response_id": "resp_nope"},
            "VALIDATION_4040",
            "previous_response_id",
        ),
    }
    for name, (fields, code, param) in cases.items():
        body = {"model": MODEL, "input": "Hi", **fields}
        body = {k: v for k, v in body.items() if v is not None}
        response = httpx.post(
            f"{gateway.base_url}/v1/responses",
            headers={"Authorization": f"Bearer {api_key}"},
            json=body,
        )
        error = response.json()["error"]
        assert (error["code"], error["param"]) == (code, param), (name, error)


def test_hostile_bodies_are_refused_while_others_are_served(
    gateway: GatewayProcess, api_key: str
) -> None:
    deep = '{"type": "object", "properties": {"a": ' * 5000 + "{}" + "}}" * 5000
    bodies = [
        b'{"model": "rich", "input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        (
            '{"model": "rich", "input": "x", '
            f'"tools": [{{"type": "function", "name": "f", "parameters": {deep}}}]}}'
        ).encode(),
        json.dumps(
            {"model": MODEL, "input": [{"role": "user", "content": "x"}] * 100_000}
        ).encode(),
    ]
    statuses: list[int] = []

    def attack() -> None:
        headers = {"Authorization": f"Bearer {api_key}", "content-type": "application/json"}
        for body in bodies:
            answer = httpx.post(
                f"{gateway.base_url}/v1/responses", headers=headers, content=body, timeout=60
            )
            statuses.append(answer.status_code)

    thread = threading.Thread(target=attack)
    thread.start()
    started = time.monotonic()
    served = post(gateway, api_key)
    elapsed = time.monotonic() - started
    thread.join()
    assert served.status_code == 200
    assert elapsed < 5, elapsed
    assert all(400 <= status < 500 for status in statuses), statuses
