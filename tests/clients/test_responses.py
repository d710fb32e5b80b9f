"""The official `openai` SDK's Responses API and the OpenAI Agents SDK (its default model is the
Responses API) against `/v1/responses`, on both lanes (tests/clients/conftest.py). Answers are read
back through the SDK's own types; stored responses are retrieved, listed, continued and deleted."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI, OpenAI
from openai.types.responses import FunctionToolParam, Response

from tests.harness import GatewayProcess, billed_pico, sse_events

ON_EMBEDDED_ROUTE = {"test_function_tool_round_trip", "test_agents_sdk_calls_a_tool"}
UNCHARGED = {"test_error_classes"}
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}

pytestmark = pytest.mark.timeout(300)
set_tracing_disabled(True)  # the Agents SDK would export traces to OpenAI


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess, api_key: str) -> OpenAI:
    return OpenAI(base_url=f"{gateway.base_url}/v1", api_key=api_key, max_retries=0, timeout=120)


def test_create(client: OpenAI, model: str, gateway: GatewayProcess) -> None:
    raw = client.responses.with_raw_response.create(
        model=model, input="Name three Hanseatic cities.", max_output_tokens=8
    )
    body = json.loads(raw.text)
    response = Response.model_validate(body)
    assert response.object == "response" and response.output_text
    assert response.status in ("completed", "incomplete")
    if response.status == "incomplete":
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and 0 < response.usage.output_tokens <= 8
    assert billed_pico(body) == gateway.last_cost_pico()
    assert "environment_impact" in body


def test_stream(client: OpenAI, model: str, gateway: GatewayProcess) -> None:
    deltas: list[str] = []
    with client.responses.stream(model=model, input="Say hello.", max_output_tokens=8) as stream:
        events = list(stream)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas and [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[1].type == "response.in_progress"
    last = events[-1]
    # OpenAI ends a cut answer with response.incomplete (openai-python 3.3's get_final_response
    # wants response.completed, so the last event is read instead).
    assert last.type in ("response.completed", "response.incomplete")
    final = last.response
    assert final.output_text == "".join(deltas)
    assert final.usage is not None and 0 < final.usage.output_tokens <= 8
    raw = last.model_dump()["response"]
    assert billed_pico(raw) == gateway.last_cost_pico()


def test_raw_stream_event_names(gateway: GatewayProcess, api_key: str, model: str) -> None:
    response = httpx.post(
        f"{gateway.base_url}/v1/responses",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": model, "input": "Hi", "max_output_tokens": 4, "stream": True},
        timeout=120,
    )
    names = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    events = sse_events(response.text)
    assert names == [e["type"] for e in events]
    assert names[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert names[-4:-1] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]


def test_function_tool_round_trip(client: OpenAI, model: str) -> None:
    first = client.responses.create(
        model=model,
        input="What is the weather in Hamburg?",
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=80,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments)["city"]
    second = client.responses.create(
        model=model,
        previous_response_id=first.id,
        tools=[WEATHER],
        input=[
            {
                "type": "function_call_output",
                "call_id": calls[0].call_id,
                "output": '{"temperature": 11}',
            }
        ],
        max_output_tokens=12,
    )
    assert second.previous_response_id == first.id
    assert second.output and second.status in ("completed", "incomplete")


def test_previous_response_id_continues_the_conversation(client: OpenAI, model: str) -> None:
    first = client.responses.create(model=model, input="Name a city.", max_output_tokens=6)
    alone = client.responses.create(model=model, input="And another?", max_output_tokens=6)
    second = client.responses.create(
        model=model, input="And another?", previous_response_id=first.id, max_output_tokens=6
    )
    assert first.usage is not None and second.usage is not None and alone.usage is not None
    # The stored turn (question and answer) went before the new input.
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens


def test_retrieve_list_delete_and_other_accounts(
    client: OpenAI, gateway: GatewayProcess, model: str, api_key: str
) -> None:
    # Stored under the lane's account: another account cannot see it or continue it.
    created = client.responses.create(model=model, input="Hi", max_output_tokens=2)
    got = client.responses.retrieve(created.id)
    assert got.id == created.id and got.output_text == created.output_text
    items = client.responses.input_items.list(created.id)
    assert [(i.type, i.role) for i in items.data] == [("message", "user")]  # type: ignore[union-attr]
    stranger = OpenAI(
        base_url=f"{gateway.base_url}/v1",
        api_key=gateway.create_key(account="stranger"),
        max_retries=0,
    )
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.create(
            model=model, input="x", previous_response_id=created.id, max_output_tokens=2
        )
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    unstored = client.responses.create(model=model, input="Hi", max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_error_classes(client: OpenAI, gateway: GatewayProcess, model: str) -> None:
    stranger = OpenAI(base_url=f"{gateway.base_url}/v1", api_key="sk-mel-no", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.responses.create(model=model, input="x", max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x", max_output_tokens=2)
    with pytest.raises(openai.BadRequestError) as overflow:
        client.responses.create(model=model, input="ship " * 9000, max_output_tokens=2)
    assert "context_length_exceeded" in str(overflow.value)
    with pytest.raises(openai.BadRequestError) as tool:
        client.responses.create(
            model=model, input="x", tools=[{"type": "web_search"}], max_output_tokens=2
        )
    assert tool.value.code == "VALIDATION_4008"


def _agent_model(gateway: GatewayProcess, api_key: str, model: str) -> OpenAIResponsesModel:
    client = AsyncOpenAI(base_url=f"{gateway.base_url}/v1", api_key=api_key, max_retries=0)
    return OpenAIResponsesModel(model=model, openai_client=client)


def test_agents_sdk_default_model(gateway: GatewayProcess, api_key: str, model: str) -> None:
    """The SDK's default path: a model named by a string, served by its default provider (the
    Responses API) through the default client."""
    client = AsyncOpenAI(base_url=f"{gateway.base_url}/v1", api_key=api_key, max_retries=0)
    set_default_openai_client(client, use_for_tracing=False)
    agent = Agent(
        name="Hanse",
        instructions="Answer with one word.",
        model=model,
        # The Agents SDK takes a cut answer (`incomplete`) as an error: room to finish, greedily.
        model_settings=ModelSettings(max_tokens=96, temperature=0),
    )
    result = Runner.run_sync(agent, "Name a Hanseatic city.", run_config=RunConfig())
    assert isinstance(result.final_output, str) and result.final_output
    assert [r.type for r in result.raw_responses[0].output][-1] == "message"  # type: ignore[attr-defined]


@function_tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return '{"temperature": 11}'


def test_agents_sdk_calls_a_tool(gateway: GatewayProcess, api_key: str, model: str) -> None:
    agent = Agent(
        name="Weather",
        instructions="Use the tool, then answer.",
        model=_agent_model(gateway, api_key, model),
        tools=[get_weather],
        model_settings=ModelSettings(tool_choice="required", max_tokens=96, temperature=0),
        # The run ends with the tool's result: a 135M model may call the tool again and again when
        # asked to go on (the follow-up turn is test_function_tool_round_trip's).
        tool_use_behavior="stop_on_first_tool",
    )
    result = Runner.run_sync(agent, "What is the weather in Hamburg?", max_turns=3)
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item"]
    assert result.final_output == '{"temperature": 11}'
