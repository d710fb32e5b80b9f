"""Chat completions on the embedded model, through the official `openai` SDK."""

from __future__ import annotations

import asyncio
import json

import httpx
import jsonschema
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.harness import GatewayProcess, assert_schema, sse_events

MODEL = "smollm2-135m"
HELLO = [{"role": "user", "content": "Name three Hanseatic cities."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_plain_answer_matches_the_openai_schema(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=12
    )
    body = json.loads(raw.text)
    assert_schema("CreateChatCompletionResponse", body)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert 0 < completion.usage.completion_tokens <= 12
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert raw.headers["x-request-id"]
    assert raw.headers["x-hanse-provider"] == "hanse-local"


def test_max_tokens_limits_length(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a long story about ships."}],
        max_completion_tokens=3,
        temperature=0,
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_same_seed_same_text(client: OpenAI) -> None:
    def ask() -> str | None:
        completion = client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=16, temperature=1.2, seed=1234
        )
        return completion.choices[0].message.content

    first = ask()
    assert first == ask()


def test_n_choices_with_distinct_indexes(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=6, n=3, temperature=1.0, seed=5
    )
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(c.message.content for c in completion.choices)
    assert completion.usage is not None and completion.usage.completion_tokens <= 18


def test_stop_sequence_is_not_returned(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        max_tokens=40,
        temperature=0,
        stop=["5"],
    )
    content = completion.choices[0].message.content or ""
    assert "5" not in content
    assert completion.choices[0].finish_reason == "stop"


def test_logprobs_with_top_alternatives(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=5, logprobs=True, top_logprobs=3, temperature=0
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert len(logprobs.content) == 5
    for entry in logprobs.content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        # At temperature 0 the chosen token is the most likely one.
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)
    text = "".join(entry.token for entry in logprobs.content)
    assert text == completion.choices[0].message.content


def test_json_object_parses(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        response_format={"type": "json_object"},
        max_tokens=60,
        temperature=0,
    )
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)


def test_json_schema_output_validates(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "founded": {"type": "integer"},
            "hanseatic": {"type": "boolean"},
        },
        "required": ["city", "founded", "hanseatic"],
        "additionalProperties": False,
    }
    for seed in (1, 2, 3):
        completion = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Tell me about Lübeck."}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "city", "schema": schema, "strict": True},
            },
            max_tokens=80,
            seed=seed,
        )
        assert completion.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(completion.choices[0].message.content or ""), schema)


def test_named_tool_choice_returns_a_valid_call(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Hamburg?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"  # as OpenAI finishes a named tool choice
    assert choice.message.tool_calls and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])


def test_required_tool_choice_picks_one_of_the_tools(client: OpenAI) -> None:
    other = {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    }
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Bremen?"}],
        tools=[WEATHER_TOOL, other],
        tool_choice="required",
        max_tokens=60,
    )
    calls = completion.choices[0].message.tool_calls
    assert completion.choices[0].finish_reason == "tool_calls"
    assert calls and calls[0].function.name in ("get_weather", "get_time")


def test_tool_choice_none_answers_in_text(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Bremen?"}],
        tools=[WEATHER_TOOL],
        tool_choice="none",
        max_tokens=8,
    )
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].message.content


def test_tool_round_trip_is_accepted(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are concise."},
            {"role": "user", "content": "Weather in Kiel?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Kiel"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 11}'},
        ],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        max_tokens=10,
    )
    choice = completion.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    assert choice.message.content or choice.message.tool_calls


def test_stream_chunks_follow_openai(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].choices[0].finish_reason in ("stop", "length")
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and 0 < last.usage.completion_tokens <= 8
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


def test_stream_wire_format_and_schema(gateway: GatewayProcess, api_key: str) -> None:
    response = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={
            "model": MODEL,
            "messages": HELLO,
            "max_tokens": 6,
            "n": 2,
            "stream": True,
            "logprobs": True,
            "stream_options": {"include_usage": True},
        },
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    for chunk in events[:-1]:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
    finishes = {
        c["choices"][0]["index"]
        for c in events[:-1]
        if c["choices"] and c["choices"][0]["finish_reason"]
    }
    assert finishes == {0, 1}


def test_streamed_tool_call_has_indexed_deltas(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Lübeck?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=60,
        stream=True,
    )
    chunks = list(stream)
    pieces = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert pieces and pieces[0].index == 0 and pieces[0].id and pieces[0].function
    assert pieces[0].function.name == "get_weather"
    arguments = "".join(p.function.arguments or "" for p in pieces if p.function)
    assert json.loads(arguments)["city"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_client_request_id_is_echoed(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=2, extra_body={"request_id": "my-trace-42"}
    )
    assert raw.headers["x-request-id"] == "my-trace-42"


@pytest.mark.anyio
async def test_concurrent_requests_are_all_answered(aclient: AsyncOpenAI) -> None:
    async def ask(i: int) -> str | None:
        completion = await aclient.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Say {i}"}], max_tokens=6
        )
        return completion.choices[0].message.content

    answers = await asyncio.gather(*(ask(i) for i in range(8)))
    assert all(answers)


@pytest.mark.anyio
async def test_async_stream(aclient: AsyncOpenAI) -> None:
    stream = await aclient.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=5, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_disconnect_stops_the_generation(gateway: GatewayProcess, api_key: str) -> None:
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "Write a very long essay about the sea."}],
            "max_tokens": 4000,
            "stream": True,
            "request_id": "disconnect-me",
        },
        timeout=60,
    ) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    # The next request is served by the same single generation thread: it can only finish once
    # the abandoned generation stopped, and the server says how few tokens that one produced.
    client = OpenAI(base_url=f"{gateway.base_url}/v1", api_key=api_key, max_retries=0)
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
    stopped = [
        json.loads(line)
        for line in gateway.log().splitlines()
        if '"generation cancelled"' in line and "disconnect-me" in line
    ]
    assert stopped, gateway.log()[-2000:]
    assert stopped[0]["completion_tokens"] < 4000
