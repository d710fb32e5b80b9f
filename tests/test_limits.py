"""The `[limits]` table: each limit, just inside (served) and just beyond (a clear VALIDATION_4xxx)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import GatewayProcess
from tests.upstream import Canned, ScriptedUpstream

LIMITS = """[limits]
max_body_bytes = 20000
max_messages = 3
max_content_chars = 500
max_tools = 2
max_schema_depth = 4
max_schema_bytes = 300
max_stop_sequences = 2
max_stop_chars = 5
max_total_output_tokens = 100

"""
HELLO = [{"role": "user", "content": "Hi"}]


def tool(name: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "parameters": parameters or {"type": "object"}},
    }


EMPTY_OBJECT_ANSWER = {
    "id": "chatcmpl-empty",
    "object": "chat.completion",
    "created": 0,
    "model": "empty-object",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "{}"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def nested(depth: int) -> dict[str, Any]:
    """An object schema whose JSON nests `depth` levels deep."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth - 2):
        schema = {"type": "array", "items": schema}
    return {"type": "object", "additionalProperties": schema}


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[GatewayProcess]:
    config = LIMITS + (
        f'[[providers]]\nid = "up"\nkind = "openai_compatible"\nbase_url = "{upstream.base_url}"\n\n'
        '[[models]]\nid = "m"\ncontext_length = 4096\n'
        "capabilities = { function_calling = true, json_schema = true }\n"
        '[[models.routes]]\nprovider = "up"\nupstream_model = "empty-object"\n'
    )
    # `{}`: valid against every schema these tests send, which the route claims to enforce (and
    # the gateway checks after generation).
    upstream.canned["empty-object"] = Canned(body=EMPTY_OBJECT_ANSWER)
    process = GatewayProcess(Path(tmp_path_factory.mktemp("limits")), config=config).start()
    yield process
    process.stop()


def post(gateway: GatewayProcess, key: str, **fields: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json={"model": "m", "messages": HELLO, **fields},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


# (fields just inside the limit, fields just beyond it, param, limit)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], str, str]] = {
    "messages": ({"messages": HELLO * 3}, {"messages": HELLO * 4}, "messages", "max_messages"),
    "content": (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 500}]}]},
        {"messages": [*HELLO, {"role": "assistant", "content": "y" * 499}]},
        "messages",
        "max_content_chars",
    ),
    "tools": (
        {"tools": [tool("a"), tool("b")]},
        {"tools": [tool(n) for n in "abc"]},
        "tools",
        "max_tools",
    ),
    "schema-depth": (
        {"response_format": json_schema(nested(4))},
        {"response_format": json_schema(nested(5))},
        "response_format.json_schema.schema",
        "max_schema_depth",
    ),
    "tool-schema-depth": (
        {"tools": [tool("a", nested(4))]},
        {"tools": [tool("a"), tool("b", nested(5))]},
        "tools[1].function.parameters",
        "max_schema_depth",
    ),
    "schema-bytes": (
        {"response_format": json_schema({"type": "object", "description": "d" * 200})},
        {"response_format": json_schema({"type": "object", "description": "d" * 300})},
        "response_format.json_schema.schema",
        "max_schema_bytes",
    ),
    "stop-count": ({"stop": ["a", "b"]}, {"stop": ["a", "b", "c"]}, "stop", "max_stop_sequences"),
    "stop-length": ({"stop": "abcde"}, {"stop": "abcdef"}, "stop", "max_stop_chars"),
    "stop-item-length": (
        {"stop": ["a", "abcde"]},
        {"stop": ["a", "abcdef"]},
        "stop[1]",
        "max_stop_chars",
    ),
    "n-x-max-tokens": (
        {"n": 2, "max_tokens": 50},
        {"n": 2, "max_tokens": 51},
        "max_tokens",
        "max_total_output_tokens",
    ),
    "max-completion-tokens": (
        {"max_completion_tokens": 100},
        {"max_completion_tokens": 101},
        "max_completion_tokens",
        "max_total_output_tokens",
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_each_limit(gateway: GatewayProcess, api_key: str, case: str) -> None:
    inside, beyond, param, limit = CASES[case]
    assert post(gateway, api_key, **inside).status_code == 200
    response = post(gateway, api_key, **beyond)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("VALIDATION_4101", param)
    assert error["details"]["limit"] == limit
    assert error["details"]["actual"] > error["details"]["maximum"]
    assert limit in error["message"]


def test_a_body_over_the_cap_is_413(gateway: GatewayProcess, api_key: str) -> None:
    big = [{"role": "user", "content": "x" * 25_000}]
    response = post(gateway, api_key, messages=big)
    assert response.status_code == 413
    error = response.json()["error"]
    assert (error["code"], error["details"]) == ("VALIDATION_4130", {"max_bytes": 20000})


def test_a_chunked_body_is_counted_as_it_arrives(gateway: GatewayProcess, api_key: str) -> None:
    def pieces() -> Iterator[bytes]:
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"}]}'

    response = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        content=pieces(),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "VALIDATION_4130"


def test_a_small_chunked_body_is_served(gateway: GatewayProcess, api_key: str) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "Hi"}]}'
    response = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        content=iter([body[:10], body[10:]]),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
