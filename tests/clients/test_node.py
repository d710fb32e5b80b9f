"""The Node clients (official `openai`, Vercel AI SDK) run their everyday scenarios against a live
gateway, on the embedded model and on llama-cpp-python's own OpenAI server (tests/clients/conftest.py).

Each scenario is a Node script under tests/clients/node (`make install-test` runs `npm ci` there): it
prints one JSON line, `{"ok": true, "result": ...}` or `{"ok": false, "error": ...}`; the assertions are here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.clients.conftest import LANE_MODELS
from tests.harness import GatewayProcess, assert_schema

NODE_DIR = Path(__file__).parent / "node"
# The three failures every client must classify, as scripted in each `errors` scenario.
BAD_KEY, UNKNOWN_MODEL, OVERFLOW = "badKey", "unknownModel", "overflow"
# What llama_cpp.server cannot serve (tools, `json_schema`): the upstream lane's catalog routes it to
# the embedded engine (docs/clients.md), so these scenarios are served there on both lanes.
ON_EMBEDDED_ROUTE = {
    "test_openai_tool_call_and_follow_up",
    "test_openai_streamed_tool_call_helper",
    "test_openai_parse_with_zod",
    "test_ai_sdk_tool_call_and_follow_up",
    "test_ai_sdk_streamed_tool_call",
    "test_ai_sdk_generate_object",
    "test_ai_sdk_stream_object",
    "test_ai_sdk_generate_text_with_output_object",
}
# Failures the gateway refuses before any route: nothing is charged.
UNCHARGED = {"test_openai_error_classes", "test_ai_sdk_error_classes"}

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def node_env(gateway: GatewayProcess, api_key: str, lane: str) -> dict[str, str]:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir():
        pytest.fail("the Node clients are not installed: run `make install-test` (npm ci)")
    return {
        **os.environ,
        "HANSE_BASE_URL": gateway.base_url,
        "HANSE_API_KEY": api_key,
        "HANSE_MODEL": LANE_MODELS[lane],
        "AI_SDK_LOG_WARNINGS": "false",
    }


def run_node(env: dict[str, str], script: str, *args: str) -> Any:
    """The scenario's result; a scenario that threw fails the test with what the SDK said."""
    done = subprocess.run(
        ["node", script, *args],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"no report from {script} {args}: {done.stderr[-2000:]}"
    report = json.loads(lines[-1])
    assert report["ok"], json.dumps(report["error"], indent=1)
    return report["result"]


# The official `openai` Node SDK.


def test_openai_create(node_env: dict[str, str]) -> None:
    completion = run_node(node_env, "openai.mjs", "create")
    assert_schema("CreateChatCompletionResponse", completion)
    assert completion["choices"][0]["message"]["content"]
    assert 0 < completion["usage"]["completion_tokens"] <= 8


def test_openai_stream_with_usage(node_env: dict[str, str]) -> None:
    chunks = run_node(node_env, "openai.mjs", "stream")
    for chunk in chunks:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    last = chunks[-1]
    assert last["choices"] == []
    assert 0 < last["usage"]["completion_tokens"] <= 8


def test_openai_tool_call_and_follow_up(node_env: dict[str, str]) -> None:
    turns = run_node(node_env, "openai.mjs", "tools")
    calls = turns["first"]["choices"][0]["message"]["tool_calls"]
    assert calls and calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"])["city"]
    # The follow-up replayed the SDK's own assistant message and the tool result: it was answered.
    second = turns["second"]["choices"][0]
    assert second["finish_reason"] in ("stop", "length", "tool_calls")
    assert second["message"]["content"] or second["message"].get("tool_calls")


def test_openai_streamed_tool_call_helper(node_env: dict[str, str]) -> None:
    result = run_node(node_env, "openai.mjs", "toolsStream")
    choice = result["completion"]["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"])["city"]
    # Arguments stream as they are generated, as OpenAI streams them, not in one piece at the end.
    assert result["argumentPieces"] > 1


def test_openai_parse_with_zod(node_env: dict[str, str]) -> None:
    parsed = run_node(node_env, "openai.mjs", "parse")
    assert parsed["finish_reason"] == "stop"
    assert 800 <= parsed["parsed"]["founded"] <= 2025
    assert 0 < len(parsed["parsed"]["name"]) <= 20


def test_openai_error_classes(node_env: dict[str, str]) -> None:
    errors = run_node(node_env, "openai.mjs", "errors")
    assert errors[BAD_KEY]["isAuthenticationError"] and errors[BAD_KEY]["status"] == 401
    assert errors[UNKNOWN_MODEL]["isNotFoundError"] and errors[UNKNOWN_MODEL]["status"] == 404
    overflow = errors[OVERFLOW]
    assert overflow["isBadRequestError"] and overflow["param"] == "messages"
    assert "context_length_exceeded" in overflow["message"]


# The Vercel AI SDK, through both of its providers for OpenAI-shaped APIs.

PROVIDERS = ["compatible", "openai"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_ai_sdk_generate_text(node_env: dict[str, str], provider: str) -> None:
    result = run_node(node_env, "ai-sdk.mjs", provider, "create")
    assert result["text"]
    assert result["finishReason"] in ("stop", "length")
    assert 0 < result["usage"]["outputTokens"] <= 8
    assert result["usage"]["totalTokens"] == (
        result["usage"]["inputTokens"] + result["usage"]["outputTokens"]
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_ai_sdk_stream_text_with_usage(node_env: dict[str, str], provider: str) -> None:
    result = run_node(node_env, "ai-sdk.mjs", provider, "stream")
    assert "".join(result["parts"])
    assert result["finishReason"] in ("stop", "length")
    assert 0 < result["usage"]["outputTokens"] <= 8


@pytest.mark.parametrize("provider", PROVIDERS)
def test_ai_sdk_tool_call_and_follow_up(node_env: dict[str, str], provider: str) -> None:
    result = run_node(node_env, "ai-sdk.mjs", provider, "tools")
    calls = result["first"]["toolCalls"]
    assert calls and calls[0]["toolName"] == "get_weather" and calls[0]["input"]["city"]
    assert result["first"]["toolResults"][0]["output"] == {"temperature": 11}
    assert result["appended"] == ["assistant", "tool"]
    second = result["second"]
    assert second["finishReason"] in ("stop", "length", "tool-calls")
    assert second["text"] or second["toolCalls"]


def test_ai_sdk_streamed_tool_call(node_env: dict[str, str]) -> None:
    result = run_node(node_env, "ai-sdk.mjs", "compatible", "toolsStream")
    assert result["errors"] == []
    assert result["finishReason"] == "tool-calls"
    assert result["toolCalls"][0]["toolName"] == "get_weather"
    assert result["toolCalls"][0]["input"]["city"]
    assert result["inputDeltas"] > 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_ai_sdk_generate_object(node_env: dict[str, str], provider: str) -> None:
    result = run_node(node_env, "ai-sdk.mjs", provider, "object")
    assert result["finishReason"] == "stop"
    assert 800 <= result["object"]["founded"] <= 2025
    assert 0 < len(result["object"]["name"]) <= 20


def test_ai_sdk_stream_object(node_env: dict[str, str]) -> None:
    result = run_node(node_env, "ai-sdk.mjs", "compatible", "streamObject")
    assert result["partials"] > 1
    assert result["finishReason"] == "stop"
    assert 800 <= result["object"]["founded"] <= 2025


def test_ai_sdk_generate_text_with_output_object(node_env: dict[str, str]) -> None:
    result = run_node(node_env, "ai-sdk.mjs", "compatible", "output")
    assert result["finishReason"] == "stop"
    assert 800 <= result["output"]["founded"] <= 2025
    assert 0 < len(result["output"]["name"]) <= 20


@pytest.mark.parametrize("provider", PROVIDERS)
def test_ai_sdk_error_classes(node_env: dict[str, str], provider: str) -> None:
    errors = run_node(node_env, "ai-sdk.mjs", provider, "errors")
    # The AI SDK has one class for HTTP failures, APICallError, told apart by status and body.
    assert all(error["isAPICallError"] for error in errors.values())
    assert errors[BAD_KEY]["status"] == 401 and not errors[BAD_KEY]["isRetryable"]
    assert errors[UNKNOWN_MODEL]["status"] == 404 and not errors[UNKNOWN_MODEL]["isRetryable"]
    overflow = errors[OVERFLOW]
    assert overflow["status"] == 400 and not overflow["isRetryable"]
    assert "context_length_exceeded" in overflow["message"]
    assert json.loads(overflow["responseBody"])["error"]["type"] == "invalid_request_error"
