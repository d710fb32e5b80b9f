"""Requests real clients send, against a live gateway in front of a scripted upstream: replayed SDK
history (`message.model_dump()`), OpenAI's own answers with `annotations`, deprecated function turns,
every current OpenAI parameter, and the context-overflow error as LangChain and LiteLLM detect it.

What the upstream received shows what is forwarded, mapped or dropped (docs/parameters.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.harness import GatewayProcess
from tests.upstream import ANSWER, TOOL_ARGUMENTS, ScriptedUpstream

HELLO: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Name three Hanseatic cities."}
]
TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
OTHER_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object"}},
}
CAPS = "function_calling = true, vision = true, structured_output = true, json_schema = true"


def _model(id_: str, upstream_model: str, context_length: int = 4096) -> str:
    return (
        f'[[models]]\nid = "{id_}"\ncontext_length = {context_length}\n'
        f"capabilities = {{ {CAPS} }}\n"
        f'[[models.routes]]\nprovider = "up"\nupstream_model = "{upstream_model}"\n\n'
    )


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[GatewayProcess]:
    config = f'[[providers]]\nid = "up"\nkind = "openai_compatible"\nbase_url = "{upstream.base_url}"\n\n'
    config += _model("up", "ok") + _model("up-tools", "tools") + _model("tiny", "ok", 64)
    process = GatewayProcess(Path(tmp_path_factory.mktemp("wire-compat")), config=config).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _fresh_records(upstream: ScriptedUpstream) -> None:
    upstream.clear()


def post(gateway: GatewayProcess, api_key: str, **fields: Any) -> httpx.Response:
    body = {"model": "up", "messages": HELLO, "max_tokens": 5, **fields}
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )


def forwarded(upstream: ScriptedUpstream) -> dict[str, Any]:
    """The body of the one request the upstream received."""
    received = upstream.received()
    assert len(received) == 1, received
    return received[0].body


# --- replayed history -----------------------------------------------------------------------------


def test_sdk_model_dump_replays(client: OpenAI, upstream: ScriptedUpstream) -> None:
    """`messages.append(resp.choices[0].message.model_dump())`: its null `function_call`, `audio`,
    `refusal`, `tool_calls` and `annotations` pass, and none of them reaches the provider."""
    first = client.chat.completions.create(model="up", messages=HELLO, max_tokens=5)
    replayed = first.choices[0].message.model_dump()
    assert {"function_call", "audio", "annotations", "refusal", "tool_calls"} <= set(replayed)
    upstream.clear()
    messages: list[Any] = [*HELLO, replayed, {"role": "user", "content": "And one more?"}]
    second = client.chat.completions.create(model="up", messages=messages, max_tokens=5)
    assert second.choices[0].message.content == ANSWER
    assert forwarded(upstream)["messages"][1] == {"role": "assistant", "content": ANSWER}


def test_sdk_tool_call_replay_with_a_named_tool_result(
    client: OpenAI, upstream: ScriptedUpstream
) -> None:
    """An assistant turn with `content: null` and tool calls, then a tool result with `name`
    (LangChain sends it): both pass; the name is not forwarded (OpenAI's schema has none)."""
    first = client.chat.completions.create(
        model="up-tools",
        messages=HELLO,
        tools=[TOOL],
        max_tokens=5,
    )
    message = first.choices[0].message
    assert message.content is None and message.tool_calls
    call_id = message.tool_calls[0].id
    upstream.clear()
    messages: list[Any] = [
        *HELLO,
        message.model_dump(),
        {"role": "tool", "tool_call_id": call_id, "name": "get_weather", "content": "12 °C"},
    ]
    client.chat.completions.create(
        model="up",
        messages=messages,
        tools=[TOOL],
        max_tokens=5,
    )
    sent = forwarded(upstream)["messages"]
    # The provider sends `""` for a null content beside tool calls (older servers want a string).
    assert sent[1]["content"] == "" and sent[1]["tool_calls"][0]["id"] == call_id
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == TOOL_ARGUMENTS
    assert sent[2] == {"role": "tool", "tool_call_id": call_id, "content": "12 °C"}


# An answer as OpenAI records it (web search model): `annotations` with a URL citation.
OPENAI_ANSWER = {
    "role": "assistant",
    "content": "Lübeck was the capital of the Hanse [1].",
    "refusal": None,
    "annotations": [
        {
            "type": "url_citation",
            "url_citation": {
                "end_index": 40,
                "start_index": 36,
                "title": "Hanseatic League",
                "url": "https://en.wikipedia.org/wiki/Hanseatic_League",
            },
        }
    ],
}


def test_an_openai_recorded_answer_with_annotations(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, messages=[*HELLO, OPENAI_ANSWER, *HELLO])
    assert response.status_code == 200, response.text
    assert forwarded(upstream)["messages"][1] == {
        "role": "assistant",
        "content": OPENAI_ANSWER["content"],
    }


def test_a_replayed_refusal_is_the_turn_s_text(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    refused = {"role": "assistant", "content": None, "refusal": "I cannot help with that."}
    response = post(gateway, api_key, messages=[*HELLO, refused, *HELLO])
    assert response.status_code == 200, response.text
    assert forwarded(upstream)["messages"][1]["content"] == "I cannot help with that."


def test_an_earlier_audio_answer_replays_as_its_transcript_turn(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    """`audio` on an assistant turn (an id, as the SDK dumps it) is dropped; the text stays."""
    spoken = {"role": "assistant", "content": "Bremen.", "audio": {"id": "audio_abc123"}}
    response = post(gateway, api_key, messages=[*HELLO, spoken, *HELLO])
    assert response.status_code == 200, response.text
    assert forwarded(upstream)["messages"][1] == {"role": "assistant", "content": "Bremen."}


def test_deprecated_function_turns_become_tool_turns(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    """An assistant `function_call` becomes a tool call, and the `role: "function"` result that
    follows a tool result answering it (same id)."""
    messages = [
        *HELLO,
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "get_weather", "arguments": TOOL_ARGUMENTS},
        },
        {"role": "function", "name": "get_weather", "content": "12 °C"},
    ]
    response = post(gateway, api_key, messages=messages, tools=[TOOL])
    assert response.status_code == 200, response.text
    sent = forwarded(upstream)["messages"]
    call = sent[1]["tool_calls"][0]
    assert call["type"] == "function" and call["function"] == {
        "name": "get_weather",
        "arguments": TOOL_ARGUMENTS,
    }
    assert "function_call" not in sent[1]
    assert sent[2] == {"role": "tool", "tool_call_id": call["id"], "content": "12 °C"}


def test_a_function_result_without_its_call_is_still_a_tool_result(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    messages = [*HELLO, {"role": "function", "name": "get_weather", "content": None}]
    response = post(gateway, api_key, messages=messages)
    assert response.status_code == 200, response.text
    sent = forwarded(upstream)["messages"][1]
    assert sent["role"] == "tool" and sent["content"] == "" and sent["tool_call_id"]


def test_prompt_cache_breakpoints_on_parts_are_dropped(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    part = {"type": "text", "text": "Hi", "prompt_cache_breakpoint": {"mode": "explicit"}}
    response = post(gateway, api_key, messages=[{"role": "user", "content": [part]}])
    assert response.status_code == 200, response.text
    # Text parts travel joined (openai_compatible), and without the breakpoint.
    assert forwarded(upstream)["messages"][0] == {"role": "user", "content": "Hi"}


# --- current parameters ---------------------------------------------------------------------------

# Accepted, with no effect here: never forwarded (docs/parameters.md).
IGNORED: dict[str, Any] = {
    "safety_identifier": "user-4f2a",
    "prompt_cache_key": "tenant-7",
    "prompt_cache_retention-in_memory": "in_memory",
    "prompt_cache_retention-24h": "24h",
    "prompt_cache_options": {"ttl": "30m", "mode": "explicit"},
    "service_tier-flex": "flex",
    "service_tier-priority": "priority",
    "service_tier-scale": "scale",
    "service_tier-fast": "fast",
    "service_tier-auto": "auto",
    "verbosity": "low",
    "web_search_options": {
        "search_context_size": "low",
        "user_location": {"type": "approximate", "approximate": {"country": "DE", "city": "Kiel"}},
    },
    "modalities": ["text"],
    "audio": {"voice": "alloy", "format": "mp3"},
    "prediction": {"type": "content", "content": "Lübeck, Hamburg"},
    "store": True,
    "metadata": {"team": "hanse"},
    "moderation": {"model": "omni-moderation-latest", "policy": {"input": {"mode": "score"}}},
}
# Forwarded as sent.
FORWARDED: dict[str, Any] = {
    "reasoning_effort-minimal": "minimal",
    "reasoning_effort-none": "none",
    "reasoning_effort-xhigh": "xhigh",
    "reasoning_effort-max": "max",
    "user": "user-4f2a",
}


@pytest.mark.parametrize("case", list(IGNORED), ids=list(IGNORED))
def test_ignored_parameters_are_accepted(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, case: str
) -> None:
    name = case.split("-")[0]
    response = post(gateway, api_key, **{name: IGNORED[case]})
    assert response.status_code == 200, response.text
    assert name not in forwarded(upstream)


@pytest.mark.parametrize("case", list(FORWARDED), ids=list(FORWARDED))
def test_forwarded_parameters_reach_the_upstream(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, case: str
) -> None:
    name = case.split("-")[0]
    response = post(gateway, api_key, **{name: FORWARDED[case]})
    assert response.status_code == 200, response.text
    assert forwarded(upstream)[name] == FORWARDED[case]


def test_the_openai_sdk_sends_the_new_parameters(
    client: OpenAI, upstream: ScriptedUpstream
) -> None:
    answer = client.chat.completions.create(
        model="up",
        messages=HELLO,
        max_completion_tokens=5,
        safety_identifier="user-4f2a",
        prompt_cache_key="tenant-7",
        service_tier="priority",
        reasoning_effort="minimal",
        verbosity="low",
        store=False,
    )
    assert answer.choices[0].message.content == ANSWER
    assert forwarded(upstream)["reasoning_effort"] == "minimal"


def test_allowed_tools_narrows_the_tools(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "required",
            "tools": [{"type": "function", "function": {"name": "get_time"}}],
        },
    }
    response = post(gateway, api_key, tools=[TOOL, OTHER_TOOL], tool_choice=choice)
    assert response.status_code == 200, response.text
    body = forwarded(upstream)
    assert [t["function"]["name"] for t in body["tools"]] == ["get_time"]
    assert body["tool_choice"] == "required"


def test_allowed_tools_must_name_offered_tools(gateway: GatewayProcess, api_key: str) -> None:
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "auto",
            "tools": [{"type": "function", "function": {"name": "x"}}],
        },
    }
    response = post(gateway, api_key, tools=[TOOL], tool_choice=choice)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (
        "VALIDATION_4005",
        "tool_choice.allowed_tools.tools[0]",
    )


def test_empty_stop_strings_are_dropped(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    response = post(gateway, api_key, stop=["", "\n\n"])
    assert response.status_code == 200, response.text
    assert forwarded(upstream)["stop"] == ["\n\n"]


# Schema-valid, served where the model declares the capability (tests/test_audio_file_custom.py):
# this model does not, so each is its capability error, naming the parameter, before any upstream.
WITHOUT_CAPABILITY: dict[str, tuple[dict[str, Any], str, str]] = {
    "audio-output": (
        {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
        "INFERENCE_3213",
        "modalities",
    ),
    "custom-tool": (
        {"tools": [{"type": "custom", "custom": {"name": "sql", "format": {"type": "text"}}}]},
        "INFERENCE_3212",
        "tools",
    ),
    "custom-tool-choice": (
        {
            "tools": [TOOL, {"type": "custom", "custom": {"name": "sql"}}],
            "tool_choice": {"type": "custom", "custom": {"name": "sql"}},
        },
        "INFERENCE_3212",
        "tools",
    ),
    "custom-tool-call": (
        {
            "messages": [
                *HELLO,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c1", "type": "custom", "custom": {"name": "sql", "input": "1"}}
                    ],
                },
            ]
        },
        "INFERENCE_3212",
        "messages[1].tool_calls",
    ),
    "input-audio": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}
                    ],
                }
            ]
        },
        "INFERENCE_3210",
        "messages",
    ),
    "file": (
        {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f1"}}]}]},
        "INFERENCE_3211",
        "messages",
    ),
}


@pytest.mark.parametrize("case", list(WITHOUT_CAPABILITY), ids=list(WITHOUT_CAPABILITY))
def test_refused_without_the_capability(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, case: str
) -> None:
    fields, code, param = WITHOUT_CAPABILITY[case]
    response = post(gateway, api_key, **fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error
    assert error["details"] == {"model": "up"}
    assert upstream.received() == []


# Combinations OpenAI refuses too, whatever the model: checked before any capability.
INCONSISTENT: dict[str, tuple[dict[str, Any], str, str]] = {
    "custom-choice-not-offered": (
        {"tools": [TOOL], "tool_choice": {"type": "custom", "custom": {"name": "sql"}}},
        "VALIDATION_4005",
        "tool_choice",
    ),
    "function-choice-names-a-custom-tool": (
        {
            "tools": [{"type": "custom", "custom": {"name": "sql"}}],
            "tool_choice": {"type": "function", "function": {"name": "sql"}},
        },
        "VALIDATION_4005",
        "tool_choice",
    ),
    "a-name-twice-across-kinds": (
        {"tools": [TOOL, {"type": "custom", "custom": {"name": "get_weather"}}]},
        "VALIDATION_4005",
        "tools",
    ),
    "audio-output-without-audio": ({"modalities": ["audio"]}, "VALIDATION_4006", "audio"),
}


@pytest.mark.parametrize("case", list(INCONSISTENT), ids=list(INCONSISTENT))
def test_inconsistent_combinations(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, case: str
) -> None:
    fields, code, param = INCONSISTENT[case]
    response = post(gateway, api_key, **fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error
    assert upstream.received() == []


# --- context overflow -----------------------------------------------------------------------------

LONG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "harbour " * 200}]


def test_overflow_speaks_openai_s_words(gateway: GatewayProcess, api_key: str) -> None:
    response = post(gateway, api_key, model="tiny", messages=LONG, max_tokens=None)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["type"], error["param"]) == (
        "INFERENCE_3207",
        "invalid_request_error",
        "messages",
    )
    tokens = error["details"]["input_tokens"]
    assert error["message"] == (
        f"This model's maximum context length is 64 tokens. However, your messages resulted in "
        f"{tokens} tokens. Please reduce the length of the messages. (context_length_exceeded)"
    )
    assert error["details"]["openai_code"] == "context_length_exceeded"


def test_overflow_with_max_tokens_names_both(gateway: GatewayProcess, api_key: str) -> None:
    # The whole window asked for as output: surely over, however the input is counted.
    response = post(gateway, api_key, model="tiny", max_tokens=64)
    error = response.json()["error"]
    assert error["code"] == "INFERENCE_3207", error
    tokens = error["details"]["input_tokens"]
    assert error["message"].startswith(
        f"This model's maximum context length is 64 tokens. However, you requested {tokens + 64}"
        f" tokens ({tokens} in the messages, 64 in the completion)."
    )


def test_langchain_and_litellm_recognise_the_overflow(client: OpenAI) -> None:
    """The checks as the clients make them on the SDK's exception: langchain-openai raises its
    context-overflow error when `"context_length_exceeded" in str(e)`; LiteLLM maps to
    ContextWindowExceededError when `"This model's maximum context length is" in str(e)`."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=LONG)
    text = str(caught.value)
    assert "context_length_exceeded" in text
    assert "This model's maximum context length is" in text
    assert caught.value.param == "messages"
