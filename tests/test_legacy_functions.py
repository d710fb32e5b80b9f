"""The deprecated `functions` / `function_call` are served, and answered in their own shape."""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI

from tests.harness import GatewayProcess, assert_schema, sse_events

MODEL = "smollm2-135m"
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
    },
}
ASK = [{"role": "user", "content": "What is the weather in Bremen?"}]


def _post(gateway: GatewayProcess, key: str, **body: object) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL, "messages": ASK, "max_tokens": 40, "temperature": 0, **body},
        timeout=120,
    )


def test_a_named_function_call_is_answered_as_function_call(
    gateway: GatewayProcess, api_key: str
) -> None:
    response = _post(gateway, api_key, functions=[WEATHER], function_call={"name": "get_weather"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_schema("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    assert "tool_calls" not in message
    assert message["function_call"]["name"] == "get_weather"
    assert body["choices"][0]["finish_reason"] in ("stop", "length", "function_call")


def test_a_streamed_function_call_comes_in_function_call_deltas(
    gateway: GatewayProcess, api_key: str
) -> None:
    response = _post(
        gateway, api_key, functions=[WEATHER], function_call={"name": "get_weather"}, stream=True
    )
    assert response.status_code == 200, response.text
    events = sse_events(response.text)[:-1]
    for event in events:
        assert_schema("CreateChatCompletionStreamResponse", event)
    deltas = [c["delta"] for e in events for c in e["choices"]]
    calls = [d["function_call"] for d in deltas if d.get("function_call")]
    assert calls and calls[0]["name"] == "get_weather"
    assert not any("tool_calls" in d for d in deltas)
    arguments = "".join(c.get("arguments", "") for c in calls)
    assert arguments.startswith("{")


def test_the_sdk_accepts_it(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=ASK,  # type: ignore[arg-type]
        functions=[WEATHER],  # type: ignore[list-item]
        function_call={"name": "get_weather"},
        max_tokens=40,
        temperature=0,
    )
    call = answer.choices[0].message.function_call
    assert call is not None and call.name == "get_weather"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"functions": [WEATHER], "tools": [{"type": "function", "function": WEATHER}]},
            "functions",
        ),
        ({"function_call": "auto"}, "function_call"),
        ({"functions": [WEATHER], "function_call": {"name": "other"}}, "function_call"),
        ({"functions": [WEATHER, WEATHER]}, "functions"),
    ],
)
def test_inconsistent_functions_are_refused(
    gateway: GatewayProcess, api_key: str, body: dict[str, object], param: str
) -> None:
    response = _post(gateway, api_key, **body)
    assert response.status_code == 400, response.text
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (
        "VALIDATION_4005",
        param,
    )
