"""The Python clients (official `openai`, LangChain, LiteLLM's SDK, instructor) run their everyday
scenarios against a live gateway on the embedded model, each the way its own documentation shows."""

from __future__ import annotations

import json
import os
from typing import Any

import instructor
import openai
import pytest
from instructor.core import InstructorRetryException
from langchain_core.exceptions import ContextOverflowError
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import OpenAI
from openai.types.chat import ChatCompletionFunctionToolParam
from pydantic import BaseModel, Field, SecretStr

from tests.harness import GatewayProcess

# LiteLLM fetches its model cost map from GitHub on import unless told to use the packaged copy;
# the suite stays on loopback.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import litellm
import litellm.exceptions

# Each scenario runs on two lanes: a gateway on the embedded model, and one whose model is served by
# llama-cpp-python's own OpenAI server (tests/clients/conftest.py). What that server cannot serve (tools,
# `json_schema`) the upstream lane's catalog routes to the embedded engine (docs/clients.md): these
# scenarios are served there on both lanes, and every other one by the server on the upstream lane.
ON_EMBEDDED_ROUTE = {
    "test_openai_tool_call_and_follow_up",
    "test_openai_streamed_tool_call_helper",
    "test_openai_parse_with_pydantic",
    "test_langchain_tool_call_and_follow_up",
    "test_langchain_with_structured_output",
    "test_litellm_tool_call_and_follow_up",
    "test_litellm_response_format_pydantic",
    "test_instructor_response_model",
    "test_instructor_create_partial_streams_the_object",
}
# The scenarios of failures the gateway refuses before any route: nothing is charged.
UNCHARGED = {
    "test_openai_error_classes",
    "test_langchain_error_classes",
    "test_litellm_error_classes",
    "test_instructor_bad_key",
}
HELLO = "Name three Hanseatic cities."
LUBECK = "Tell me about Lübeck."
# Over the embedded model's 8192-token window.
OVERFLOW = "ship " * 9000
WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
WEATHER_RESULT = '{"temperature": 11}'

pytestmark = [
    pytest.mark.timeout(300),
    # LiteLLM's own models trip pydantic's warnings on import and use; they are not Hanse's to fix.
    pytest.mark.filterwarnings("ignore::UserWarning:pydantic"),
    pytest.mark.filterwarnings("ignore::pydantic.PydanticDeprecatedSince211"),
]


class City(BaseModel):
    # Bounds on both fields: the answer must keep them, not only the types.
    name: str = Field(min_length=1, max_length=20)
    founded: int = Field(ge=800, le=2025)


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return WEATHER_RESULT


@pytest.fixture(scope="module")
def base_url(gateway: GatewayProcess) -> str:
    return f"{gateway.base_url}/v1"


def assert_answered(content: str | None, tool_calls: object) -> None:
    """The follow-up turn after a tool result was accepted and answered."""
    assert content or tool_calls


# The official `openai` SDK.


def test_openai_create(client: OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": HELLO}], max_tokens=8
    )
    assert completion.choices[0].message.content
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 8


def test_openai_stream_with_usage(client: OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": HELLO}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and 0 < chunks[-1].usage.completion_tokens <= 8


def test_openai_tool_call_and_follow_up(client: OpenAI, model: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Hamburg?"}]
    first = client.chat.completions.create(
        model=model,
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=80,
    )
    message = first.choices[0].message
    assert message.tool_calls and message.tool_calls[0].type == "function"
    call = message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"]
    # OpenAI's cookbook: append the returned message as it is, then the tool's result.
    messages += [
        message.model_dump(),
        {"role": "tool", "tool_call_id": call.id, "content": WEATHER_RESULT},
    ]
    second = client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL], max_tokens=12
    )
    assert_answered(second.choices[0].message.content, second.choices[0].message.tool_calls)


def test_openai_streamed_tool_call_helper(client: OpenAI, model: str) -> None:
    with client.chat.completions.stream(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in Lübeck?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=80,
    ) as stream:
        events = [event.type for event in stream]
        completion = stream.get_final_completion()
    # Arguments stream as they are generated, as OpenAI streams them, not in one piece at the end.
    assert events.count("tool_calls.function.arguments.delta") > 1
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    assert json.loads(choice.message.tool_calls[0].function.arguments)["city"]


def test_openai_parse_with_pydantic(client: OpenAI, model: str) -> None:
    completion = client.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": LUBECK}],
        response_format=City,
        max_tokens=60,
    )
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(completion.choices[0].message.parsed, City)


def test_openai_error_classes(client: OpenAI, base_url: str, model: str) -> None:
    hello: Any = [{"role": "user", "content": HELLO}]
    stranger = OpenAI(base_url=base_url, api_key="sk-mel-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.chat.completions.create(model=model, messages=hello, max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=hello, max_tokens=2)
    with pytest.raises(openai.BadRequestError) as overflow:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": OVERFLOW}], max_tokens=2
        )
    assert overflow.value.param == "messages"
    assert "context_length_exceeded" in str(overflow.value)


# LangChain (`langchain-openai`).


@pytest.fixture(scope="module")
def chat(base_url: str, api_key: str, model: str) -> ChatOpenAI:
    return ChatOpenAI(
        model=model,
        base_url=base_url,
        api_key=SecretStr(api_key),
        max_tokens=8,
        max_retries=0,
        stream_usage=True,
    )


def test_langchain_invoke(chat: ChatOpenAI) -> None:
    answer = chat.invoke(HELLO)
    assert answer.content
    assert answer.usage_metadata is not None and 0 < answer.usage_metadata["output_tokens"] <= 8


def test_langchain_stream_with_usage(chat: ChatOpenAI) -> None:
    chunks = list(chat.stream(HELLO))
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert isinstance(total, AIMessageChunk) and total.content
    assert total.usage_metadata is not None and 0 < total.usage_metadata["output_tokens"] <= 8


def test_langchain_tool_call_and_follow_up(chat: ChatOpenAI) -> None:
    messages: list[BaseMessage] = [HumanMessage("What is the weather in Hamburg?")]
    first = chat.bind_tools([get_weather], tool_choice="get_weather").invoke(
        messages, max_tokens=80
    )
    assert isinstance(first, AIMessage) and first.tool_calls
    call = first.tool_calls[0]
    assert call["name"] == "get_weather" and call["args"]["city"]
    messages += [first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    second = chat.bind_tools([get_weather]).invoke(messages, max_tokens=12)
    assert isinstance(second, AIMessage)
    # A call cut by `max_tokens` has arguments that do not parse: LangChain files it as invalid.
    assert_answered(str(second.content), second.tool_calls or second.invalid_tool_calls)


def test_langchain_with_structured_output(chat: ChatOpenAI) -> None:
    city = chat.with_structured_output(City).invoke(LUBECK, max_tokens=60)
    assert isinstance(city, City)


def test_langchain_error_classes(chat: ChatOpenAI, base_url: str, model: str) -> None:
    stranger = ChatOpenAI(
        model=model, base_url=base_url, api_key=SecretStr("sk-mel-not-a-key"), max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        stranger.invoke(HELLO, max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        chat.invoke(HELLO, model="no-such-model", max_tokens=2)
    with pytest.raises(ContextOverflowError):
        chat.invoke(OVERFLOW, max_tokens=2)


# LiteLLM's SDK (not its proxy): an `openai/` model on Hanse's base URL.


@pytest.fixture(scope="module")
def route(base_url: str, api_key: str, model: str) -> dict[str, Any]:
    return {"model": f"openai/{model}", "api_base": base_url, "api_key": api_key, "num_retries": 0}


def test_litellm_completion(route: dict[str, Any]) -> None:
    response = litellm.completion(
        messages=[{"role": "user", "content": HELLO}], max_tokens=8, **route
    )
    assert response.choices[0].message.content
    assert 0 < response.usage.completion_tokens <= 8


def test_litellm_stream_with_usage(route: dict[str, Any]) -> None:
    stream = litellm.completion(
        messages=[{"role": "user", "content": HELLO}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        **route,
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = [c.usage for c in chunks if getattr(c, "usage", None)]
    assert usage and 0 < usage[-1].completion_tokens <= 8


def test_litellm_tool_call_and_follow_up(route: dict[str, Any]) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Hamburg?"}]
    first = litellm.completion(
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=80,
        **route,
    )
    message = first.choices[0].message
    assert message.tool_calls and json.loads(message.tool_calls[0].function.arguments)["city"]
    messages += [
        message.model_dump(),
        {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": WEATHER_RESULT},
    ]
    second = litellm.completion(messages=messages, tools=[WEATHER_TOOL], max_tokens=12, **route)
    assert_answered(second.choices[0].message.content, second.choices[0].message.tool_calls)


def test_litellm_response_format_pydantic(route: dict[str, Any]) -> None:
    response = litellm.completion(
        messages=[{"role": "user", "content": LUBECK}], response_format=City, max_tokens=60, **route
    )
    assert response.choices[0].finish_reason == "stop"
    City.model_validate_json(response.choices[0].message.content)


def test_litellm_error_classes(route: dict[str, Any]) -> None:
    hello = [{"role": "user", "content": HELLO}]
    with pytest.raises(litellm.exceptions.AuthenticationError):
        litellm.completion(messages=hello, max_tokens=2, **{**route, "api_key": "sk-mel-not-a-key"})
    with pytest.raises(litellm.exceptions.NotFoundError):
        litellm.completion(messages=hello, max_tokens=2, **{**route, "model": "openai/no-such"})
    with pytest.raises(litellm.exceptions.ContextWindowExceededError):
        litellm.completion(messages=[{"role": "user", "content": OVERFLOW}], max_tokens=2, **route)


# instructor, on the `openai` client.


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA])
def test_instructor_response_model(client: OpenAI, model: str, mode: instructor.Mode) -> None:
    city = instructor.from_openai(client, mode=mode).chat.completions.create(
        model=model,
        response_model=City,
        messages=[{"role": "user", "content": LUBECK}],
        max_tokens=60,
        max_retries=0,
    )
    assert isinstance(city, City)


def test_instructor_create_partial_streams_the_object(client: OpenAI, model: str) -> None:
    partials = list(
        instructor.from_openai(client).chat.completions.create_partial(
            model=model,
            response_model=City,
            messages=[{"role": "user", "content": LUBECK}],
            max_tokens=60,
            max_retries=0,
        )
    )
    # instructor yields the object as it fills in, piece by piece of the streamed tool arguments.
    assert len(partials) > 1
    City.model_validate(partials[-1].model_dump())


def test_instructor_bad_key(base_url: str, model: str) -> None:
    stranger = instructor.from_openai(
        OpenAI(base_url=base_url, api_key="sk-mel-not-a-key", max_retries=0)
    )
    # instructor wraps what the `openai` client raised; the cause keeps its class.
    with pytest.raises(InstructorRetryException) as failed:
        stranger.chat.completions.create(
            model=model,
            response_model=City,
            messages=[{"role": "user", "content": LUBECK}],
            max_tokens=60,
            max_retries=0,
        )
    assert isinstance(failed.value.__cause__, openai.AuthenticationError)
