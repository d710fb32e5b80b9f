"""The official `anthropic` SDK against `/v1/messages`, on both lanes (tests/clients/conftest.py):
create, `messages.stream` (text_stream, get_final_message), a tool round trip, count_tokens, and the
error classes. Every answer is read back through the SDK's own types; the raw stream's events are
checked for Anthropic's order and for the metering fields on `message_delta`."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message, MessageParam, ToolParam

from tests.harness import GatewayProcess, billed_pico, sse_events

ON_EMBEDDED_ROUTE = {"test_tool_round_trip", "test_streamed_tool_call"}
UNCHARGED = {"test_count_tokens", "test_error_classes", "test_image_on_a_model_without_vision"}
HELLO: list[MessageParam] = [{"role": "user", "content": "Name three Hanseatic cities."}]
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
OVERFLOW = "ship " * 9000

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def claude(gateway: GatewayProcess, api_key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key=api_key, max_retries=0)


def _raw(gateway: GatewayProcess, api_key: str, **body: Any) -> httpx.Response:
    headers = {"x-api-key": api_key, "anthropic-version": "2023-06-01"}
    return httpx.post(f"{gateway.base_url}/v1/messages", headers=headers, json=body, timeout=120)


def test_create(gateway: GatewayProcess, api_key: str, model: str) -> None:
    response = _raw(gateway, api_key, model=model, max_tokens=8, messages=HELLO)
    assert response.status_code == 200, response.text
    raw = response.json()
    message = Message.model_validate(raw)
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert 0 < message.usage.output_tokens <= 8 and message.usage.input_tokens > 0
    # Melious's metering fields ride the Message, exact as the ledger has them.
    assert billed_pico(raw) == gateway.last_cost_pico()
    assert raw["environment_impact"]["energy_kwh"] >= 0  # zero where the route has no size


def test_sdk_create(claude: anthropic.Anthropic, model: str) -> None:
    message = claude.messages.create(model=model, max_tokens=8, messages=HELLO)
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.output_tokens <= 8


def test_stream(claude: anthropic.Anthropic, model: str) -> None:
    with claude.messages.stream(model=model, max_tokens=8, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert 0 < final.usage.output_tokens <= 8


def test_raw_stream_events(gateway: GatewayProcess, api_key: str, model: str) -> None:
    response = _raw(gateway, api_key, model=model, max_tokens=8, messages=HELLO, stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    names = [
        line[len("event: ") :] for line in response.text.splitlines() if line.startswith("event: ")
    ]
    events = sse_events(response.text)
    assert [e["type"] for e in events] == names  # each event's name is its type
    assert names[:2] == ["message_start", "ping"]
    assert names[2] == "content_block_start" and names[-3:] == [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert set(names[3:-3]) == {"content_block_delta"}
    delta = events[-2]
    assert delta["usage"]["output_tokens"] <= 8
    assert billed_pico(delta) == gateway.last_cost_pico()
    assert "environment_impact" in delta


def test_tool_round_trip(claude: anthropic.Anthropic, model: str) -> None:
    messages: list[MessageParam] = [{"role": "user", "content": "What is the weather in Hamburg?"}]
    first = claude.messages.create(
        model=model,
        max_tokens=80,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=messages,
    )
    assert first.stop_reason == "tool_use"
    call = next(block for block in first.content if block.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input, dict) and call.input["city"]
    messages += [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": '{"temperature": 11}'}
            ],
        },
    ]
    second = claude.messages.create(model=model, max_tokens=12, tools=[WEATHER], messages=messages)
    assert second.content and second.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_streamed_tool_call(claude: anthropic.Anthropic, model: str) -> None:
    pieces = 0
    with claude.messages.stream(
        model=model,
        max_tokens=80,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "What is the weather in Hamburg?"}],
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                pieces += 1
        final = stream.get_final_message()
    call = next(block for block in final.content if block.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input, dict) and call.input["city"]
    assert final.stop_reason == "tool_use"
    assert pieces > 1  # the input streams as it is generated


def test_count_tokens(
    claude: anthropic.Anthropic, model: str, lane: str, gateway: GatewayProcess, api_key: str
) -> None:
    counted = claude.messages.count_tokens(model=model, messages=HELLO)
    assert counted.input_tokens > 0
    body = httpx.post(
        f"{gateway.base_url}/v1/messages/count_tokens",
        headers={"x-api-key": api_key, "anthropic-version": "2023-06-01"},
        json={"model": model, "messages": HELLO},
    ).json()
    assert body == {"input_tokens": counted.input_tokens}  # free: no metering fields


def test_error_classes(gateway: GatewayProcess, claude: anthropic.Anthropic, model: str) -> None:
    stranger = anthropic.Anthropic(base_url=gateway.base_url, api_key="sk-mel-no", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as bad_key:
        stranger.messages.create(model=model, max_tokens=2, messages=HELLO)
    assert bad_key.value.body["error"]["code"] == "AUTH_1008"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError) as unknown:
        claude.messages.create(model="no-such-model", max_tokens=2, messages=HELLO)
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as overflow:
        claude.messages.create(
            model=model, max_tokens=2, messages=[{"role": "user", "content": OVERFLOW}]
        )
    error = overflow.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error" and error["code"] == "INFERENCE_3207"
    assert json.dumps(error)  # the Melious details stay beside Anthropic's fields


def test_image_on_a_model_without_vision(claude: anthropic.Anthropic, model: str) -> None:
    """SmolLM2 has no vision: the image block is refused with the capability's catalog error
    (images reaching a vision model: tests/test_messages_face.py)."""
    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
    image = {"type": "base64", "media_type": "image/png", "data": pixel}
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(
            model=model,
            max_tokens=4,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": image},  # type: ignore[typeddict-item]
                        {"type": "text", "text": "What is this?"},
                    ],
                }
            ],
        )
    assert refused.value.body["error"]["code"] == "INFERENCE_3201"  # type: ignore[index]
