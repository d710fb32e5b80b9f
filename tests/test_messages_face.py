"""The Anthropic Messages face over a scripted upstream: what reaches the provider for each block
and parameter, how the provider's answer comes back (thinking, tool_use, stop reasons, usage),
errors in Anthropic's shape with the Melious code kept, money exact against the ledger, Claude
names mapped by the configured rules, and hostile bodies refused without slowing anyone else."""

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
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from tests.harness import GatewayProcess, billed_pico, png_base64, sse_events
from tests.upstream import Canned, ScriptedUpstream

MODEL = "rich"
STREAM_EVENT: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
CAPS = "function_calling = true, vision = true, file_input = true, json_schema = true, reasoning = true"
UP = {"id": "up", "object": "chat.completion", "created": 1, "model": "m"}
USAGE = {
    "prompt_tokens": 40,
    "completion_tokens": 30,
    "total_tokens": 70,
    "prompt_tokens_details": {"cached_tokens": 10},
}
THOUGHT = {
    "index": 0,
    "message": {"role": "assistant", "content": "Hamburg.", "reasoning_content": "Think."},
    "finish_reason": "stop",
}
CANNED = {
    "thinker": Canned(
        body=UP | {"choices": [THOUGHT], "usage": USAGE},
        events=[
            UP
            | {
                "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Th"}}]
            },
            UP | {"choices": [{"index": 0, "delta": {"reasoning_content": "ink."}}]},
            UP | {"choices": [{"index": 0, "delta": {"content": "Ham"}}]},
            UP
            | {"choices": [{"index": 0, "delta": {"content": "burg."}, "finish_reason": "stop"}]},
            UP | {"choices": [], "usage": USAGE},
        ],
    ),
    "cut": Canned(
        events=[UP | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Ham"}}]}],
        cut=True,
    ),
}


def catalog(base_url: str) -> str:
    text = f'[[providers]]\nid = "up"\nkind = "openai_compatible"\nbase_url = "{base_url}"\n\n'
    for name, upstream_model in ((MODEL, "ok"), ("thinking", "thinker"), ("breaks", "cut")):
        text += f'[[models]]\nid = "{name}"\ncontext_length = 8192\ncapabilities = {{ {CAPS} }}\n'
        text += f'[[models.routes]]\nprovider = "up"\nupstream_model = "{upstream_model}"\n'
        text += 'input_eur_per_million = "2"\noutput_eur_per_million = "3"\n\n'
    text += '[messages]\nmodel_rules = [{ contains = "sonnet", model = "rich" }]\n'
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
    workdir = Path(tmp_path_factory.mktemp("messages-face"))
    process = GatewayProcess(workdir, config=catalog(upstream.base_url)).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api_key(gateway: GatewayProcess) -> str:
    key = gateway.create_key(account="claude")
    topup = gateway.cli("accounts", "topup", "claude", "--credits", "10")
    assert topup.returncode == 0, topup.stderr
    return key


@pytest.fixture(autouse=True)
def _fresh(upstream: ScriptedUpstream) -> Iterator[None]:
    upstream.clear()
    yield
    upstream.behaviour = None


def post(
    gateway: GatewayProcess, key: str, path: str = "/v1/messages", version: bool = True, **body: Any
) -> httpx.Response:
    headers = {"x-api-key": key}
    if version:
        headers["anthropic-version"] = "2023-06-01"
    fields = {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]}
    return httpx.post(f"{gateway.base_url}{path}", headers=headers, json=fields | body, timeout=60)


def forwarded(upstream: ScriptedUpstream) -> dict[str, Any]:
    [received] = upstream.received()
    return received.body


def test_blocks_and_parameters_reach_the_provider_in_chat_shape(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    pdf = base64.b64encode(b"%PDF-1.4 Hanse").decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:", "cache_control": {"type": "ephemeral"}},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": png_base64()},
                },
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": pdf},
                    "title": "cities.pdf",
                },
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "Bremen"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hidden", "signature": "sig"},
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Kiel"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "11"}],
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    response = post(
        gateway,
        api_key,
        system=[{"type": "text", "text": "Be brief."}],
        messages=messages,
        tools=[
            {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}
        ],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        stop_sequences=["\n\n"],
        temperature=0.5,
        top_k=40,
        metadata={"user_id": "user-42"},
        thinking={"type": "enabled", "budget_tokens": 2048},
    )
    assert response.status_code == 200, response.text
    sent = forwarded(upstream)
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "user"]
    parts = sent["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "file", "text"]
    assert parts[1]["image_url"]["url"].startswith("data:image/")
    assert parts[2]["file"] == {
        "filename": "cities.pdf",
        "file_data": f"data:application/pdf;base64,{pdf}",
    }
    assert parts[3]["text"] == "Bremen"
    call = sent["messages"][2]["tool_calls"][0]
    assert sent["messages"][2]["content"] == "Let me check."  # the thinking block stays behind
    assert (call["id"], call["function"]["name"]) == ("toolu_1", "get_weather")
    assert json.loads(call["function"]["arguments"]) == {"city": "Kiel"}
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "11"}
    assert sent["tools"][0]["function"]["parameters"] == {"type": "object"}
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
    assert (sent["stop"], sent["temperature"], sent["user"]) == (["\n\n"], 0.5, "user-42")
    assert sent["reasoning_effort"] == "low"


def test_output_format_is_a_json_schema_response_format(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    upstream.behaviour = "json-valid"
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response = post(
        gateway,
        api_key,
        output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "high"},
    )
    assert response.status_code == 200, response.text
    sent = forwarded(upstream)
    assert sent["response_format"]["json_schema"]["schema"] == schema
    assert sent["reasoning_effort"] == "high"
    assert json.loads(response.json()["content"][0]["text"]) == {"city": "Hamburg"}


def test_reasoning_comes_back_as_a_thinking_block_and_money_is_exact(
    gateway: GatewayProcess, api_key: str
) -> None:
    response = post(gateway, api_key, model="thinking")
    assert response.status_code == 200, response.text
    body = response.json()
    message = Message.model_validate(body)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert body["content"][0]["thinking"] == "Think." and body["content"][1]["text"] == "Hamburg."
    assert message.stop_reason == "end_turn"
    # Cached tokens are reported apart from input_tokens, as Anthropic does.
    assert body["usage"] == {
        "input_tokens": 30,
        "output_tokens": 30,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 10,
    }
    assert billed_pico(body) == gateway.last_cost_pico() == 40 * 2_000_000 + 30 * 3_000_000


def test_a_stream_carries_thinking_text_and_metering_on_message_delta(
    gateway: GatewayProcess, api_key: str
) -> None:
    response = post(gateway, api_key, model="thinking", stream=True)
    assert response.status_code == 200
    events = sse_events(response.text)
    kinds = [e["type"] for e in events]
    assert kinds == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for event in events:
        if event["type"] != "ping":
            STREAM_EVENT.validate_python(event)  # each as the SDK's own types read it
    assert events[2]["content_block"]["type"] == "thinking"
    assert events[3]["delta"] == {"type": "thinking_delta", "thinking": "Th"}
    assert events[6]["index"] == 1 and events[7]["delta"] == {"type": "text_delta", "text": "Ham"}
    delta = events[10]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 30
    assert billed_pico(delta) == gateway.last_cost_pico() == 40 * 2_000_000 + 30 * 3_000_000


def test_a_stream_that_breaks_ends_with_an_error_event_and_is_charged(
    gateway: GatewayProcess, api_key: str
) -> None:
    response = post(gateway, api_key, model="breaks", stream=True)
    events = sse_events(response.text)
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["type"] in ("api_error", "overloaded_error")
    assert events[-1]["error"]["code"].startswith("INFERENCE_")
    assert events[-2] == {"type": "content_block_stop", "index": 0}
    [row] = gateway.sql("SELECT status FROM ledger ORDER BY id DESC LIMIT 1")
    assert row["status"] == "cut"


def test_tool_calls_come_back_as_tool_use(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    upstream.behaviour = "tools"
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    response = post(gateway, api_key, tools=tools)
    body = response.json()
    assert body["stop_reason"] == "tool_use"
    assert body["content"][-1]["type"] == "tool_use" and body["content"][-1]["input"] == {
        "city": "Hamburg"
    }
    streamed = sse_events(post(gateway, api_key, tools=tools, stream=True).text)
    start = next(e for e in streamed if e["type"] == "content_block_start")
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["input"] == {}
    pieces = [e["delta"]["partial_json"] for e in streamed if e["type"] == "content_block_delta"]
    assert json.loads("".join(pieces)) == {"city": "Hamburg"}
    assert (
        next(e for e in streamed if e["type"] == "message_delta")["delta"]["stop_reason"]
        == "tool_use"
    )


def test_claude_names_map_by_the_configured_rules(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, model="claude-sonnet-4-5-20250929")
    assert response.status_code == 200, response.text
    assert response.json()["model"] == MODEL
    unknown = post(gateway, api_key, model="claude-haiku-4-5")
    assert unknown.status_code == 404
    assert unknown.json()["error"] | {"details": None} == {
        "type": "not_found_error",
        "message": unknown.json()["error"]["message"],
        "code": "INFERENCE_3001",
        "param": "model",
        "details": None,
    }


def test_errors_in_anthropic_shape(gateway: GatewayProcess, api_key: str) -> None:
    missing = post(gateway, api_key, version=False)
    assert missing.status_code == 400
    body = missing.json()
    assert body["type"] == "error" and body["request_id"] == missing.headers["x-request-id"]
    assert body["error"]["type"] == "invalid_request_error"
    assert (body["error"]["code"], body["error"]["param"]) == (
        "VALIDATION_4006",
        "anthropic-version",
    )
    cases = {
        "no max_tokens": ({"max_tokens": None}, "VALIDATION_4002", "max_tokens"),
        "unknown": ({"frobnicate": 1}, "VALIDATION_4007", "frobnicate"),
        "bad role": (
            {"messages": [{"role": "system", "content": "x"}]},
            "VALIDATION_4005",
            "messages[0].role",
        ),
        "server tool": (
            {"tools": [{"type": "web_search_20250305", "name": "web_search", "input_schema": {}}]},
            "VALIDATION_4008",
            "tools[0].type",
        ),
        "bad block": (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "f"}]}
                ]
            },
            "VALIDATION_4006",
            "messages[0].content[0].input",
        ),
    }
    for name, (fields, code, param) in cases.items():
        body = {k: v for k, v in fields.items() if v is not None}
        sent = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 5,
        } | body
        if fields.get("max_tokens", 0) is None:
            sent.pop("max_tokens")
        response = httpx.post(
            f"{gateway.base_url}/v1/messages",
            headers={"x-api-key": api_key, "anthropic-version": "2023-06-01"},
            json=sent,
        )
        error = response.json()["error"]
        assert (response.status_code, error["code"], error["param"]) == (400, code, param), name
        assert error["type"] == "invalid_request_error", name


def test_bearer_keys_work_and_count_tokens_is_free(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    before = gateway.sql("SELECT COUNT(*) AS n FROM ledger")[0]["n"]
    response = httpx.post(
        f"{gateway.base_url}/v1/messages/count_tokens",
        headers={"Authorization": f"Bearer {api_key}", "anthropic-version": "2023-06-01"},
        json={"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hi there"}]},
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"input_tokens"} and response.json()["input_tokens"] > 0
    assert gateway.sql("SELECT COUNT(*) AS n FROM ledger")[0]["n"] == before
    assert upstream.received() == []


def test_hostile_bodies_are_refused_while_others_are_served(
    gateway: GatewayProcess, api_key: str
) -> None:
    deep = '{"type": "object", "properties": {"a": ' * 5000 + "{}" + "}}" * 5000
    bodies = [
        b'{"model": "rich", "max_tokens": 5, "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        (
            '{"model": "rich", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], '
            f'"tools": [{{"name": "f", "input_schema": {deep}}}]}}'
        ).encode(),
        json.dumps(
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "x"}] * 200_000}
                ],
            }
        ).encode(),
    ]
    statuses: list[int] = []

    def attack() -> None:
        headers = {
            "x-api-key": api_key,
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
        }
        for body in bodies:
            statuses.append(
                httpx.post(
                    f"{gateway.base_url}/v1/messages", headers=headers, content=body, timeout=60
                ).status_code
            )

    thread = threading.Thread(target=attack)
    thread.start()
    started = time.monotonic()
    served = post(gateway, api_key)
    elapsed = time.monotonic() - started
    thread.join()
    assert served.status_code == 200
    assert elapsed < 5, elapsed
    assert all(400 <= status < 500 for status in statuses), statuses


def test_claude_code_request_shapes_are_accepted(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    """What Claude Code sends: beta headers, cache_control on system, messages and tools, a
    draft-07 `$schema` in tool schemas, thinking with a budget, metadata.user_id, context_management."""
    headers = {
        "x-api-key": api_key,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
        "x-app": "cli",
        "user-agent": "claude-cli/2.0.0 (external, cli)",
    }
    ephemeral = {"type": "ephemeral"}
    body = {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": ephemeral},
            {"type": "text", "text": "Be concise.", "cache_control": ephemeral},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                    {"type": "text", "text": "List the files.", "cache_control": ephemeral},
                ],
            }
        ],
        "tools": [
            {
                "name": "Bash",
                "description": "Run a command",
                "input_schema": {
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "type": "object",
                    "properties": {"command": {"type": "string"}},
                    "required": ["command"],
                    "additionalProperties": False,
                },
                "cache_control": ephemeral,
            }
        ],
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "metadata": {"user_id": "user_" + "a" * 64 + "_account__session_0f6c"},
        "context_management": {"edits": []},
    }
    response = httpx.post(f"{gateway.base_url}/v1/messages", headers=headers, json=body, timeout=60)
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    assert events[-1]["type"] == "message_stop"
    sent = forwarded(upstream)
    assert sent["reasoning_effort"] == "high" and sent["model"] == "ok"
    # 32,000 does not fit the 8,192-token window: lowered to the room the input leaves.
    assert 8000 < sent["max_tokens"] < 8192
    assert sent["messages"][0]["role"] == "system"
