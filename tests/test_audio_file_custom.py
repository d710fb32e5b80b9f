"""Audio and file input, custom tools and audio output: forwarded to an upstream whose model declares
them, relayed back in OpenAI's shape (checked with the `openai` SDK's types), and refused with the
capability's catalog error on the embedded model, which has none of them.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletion, ChatCompletionMessageCustomToolCall

from hanse.tokens import estimate_attachment_tokens
from tests.harness import GatewayProcess, sse_events
from tests.upstream import Canned, ScriptedUpstream

RICH = "rich"  # declares every capability; served by the scripted upstream
NO_FILE_ROUTE = "rich-no-file-route"  # the same, but its only route lacks file input
EMBEDDED = "smollm2-135m"
AUDIO_DATA = base64.b64encode(b"RIFF" + bytes(60)).decode()
FILE_DATA = base64.b64encode(b"%PDF-1.4 Hanse " + bytes(40)).decode()
USAGE = {
    "prompt_tokens": 40,
    "completion_tokens": 30,
    "total_tokens": 70,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 12},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 25},
}
FUNCTION_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object"}},
}
CUSTOM_TOOL = {
    "type": "custom",
    "custom": {
        "name": "sql",
        "description": "Runs one SQL query.",
        "format": {"type": "grammar", "grammar": {"definition": "SELECT .*", "syntax": "regex"}},
    },
}
CUSTOM_CALL = {"id": "call_sql_1", "type": "custom", "custom": {"name": "sql", "input": "SELECT 1"}}
AUDIO = {"id": "audio_1", "data": "UklGRg==", "expires_at": 1735693200, "transcript": "Hamburg."}
PARTS = [
    {"type": "text", "text": "What do these say?"},
    {"type": "input_audio", "input_audio": {"data": AUDIO_DATA, "format": "wav"}},
    {"type": "file", "file": {"filename": "cities.pdf", "file_data": FILE_DATA}},
    {"type": "file", "file": {"file_id": "file-abc123"}},
]
HISTORY = [
    {"role": "user", "content": "How many cities?"},
    {"role": "assistant", "content": None, "tool_calls": [CUSTOM_CALL]},
    {"role": "tool", "tool_call_id": "call_sql_1", "content": "3"},
]


def _body(message: dict[str, Any], finish: str) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
    return {"id": "up", "object": "chat.completion", "created": 1, "model": "m"} | {
        "choices": [choice],
        "usage": USAGE,
    }


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "up", "object": "chat.completion.chunk", "created": 1, "model": "m"} | {
        "choices": [choice]
    }


USAGE_CHUNK = {"id": "up", "object": "chat.completion.chunk", "created": 1, "model": "m"} | {
    "choices": [],
    "usage": USAGE,
}
CANNED = {
    "custom-call": Canned(
        body=_body({"content": None, "tool_calls": [CUSTOM_CALL]}, "tool_calls"),
        events=[
            _chunk({"role": "assistant", "content": None}),
            _chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_sql_1",
                            "type": "custom",
                            "custom": {"name": "sql", "input": "SELECT"},
                        }
                    ]
                }
            ),
            _chunk({"tool_calls": [{"index": 0, "custom": {"input": " 1"}}]}),
            _chunk({}, "tool_calls"),
            USAGE_CHUNK,
        ],
    ),
    "audio": Canned(
        body=_body({"content": None, "audio": AUDIO}, "stop"),
        events=[
            _chunk({"role": "assistant", "content": None}),
            _chunk({"audio": {"id": "audio_1", "transcript": "Ham"}}),
            _chunk({"audio": {"data": "UklG", "transcript": "burg."}}),
            _chunk({"audio": {"data": "Rg==", "expires_at": 1735693200}}),
            _chunk({}, "stop"),
            USAGE_CHUNK,
        ],
    ),
}
ALL_CAPS = (
    "function_calling = true, audio_input = true, file_input = true, custom_tools = true,"
    " audio_output = true"
)


def catalog(base_url: str) -> str:
    text = '[[providers]]\nid = "hanse-local"\nkind = "local"\n\n'
    text += f'[[providers]]\nid = "up"\nkind = "openai_compatible"\nbase_url = "{base_url}"\n\n'
    text += f'[[models]]\nid = "{EMBEDDED}"\ncontext_length = 8192\n'
    text += 'capabilities = { function_calling = true }\n[[models.routes]]\nprovider = "hanse-local"\n\n'
    for name, extra in ((RICH, ""), (NO_FILE_ROUTE, 'unsupported = ["file_input"]\n')):
        text += (
            f'[[models]]\nid = "{name}"\ncontext_length = 8192\ncapabilities = {{ {ALL_CAPS} }}\n'
        )
        text += f'[[models.routes]]\nprovider = "up"\nupstream_model = "ok"\n{extra}\n'
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
    workdir = Path(tmp_path_factory.mktemp("audio-file-custom"))
    process = GatewayProcess(workdir, config=catalog(upstream.base_url)).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _fresh_records(upstream: ScriptedUpstream) -> None:
    upstream.clear()


def post(gateway: GatewayProcess, key: str, **fields: Any) -> httpx.Response:
    body = {"model": RICH, "messages": HISTORY, "max_tokens": 5, **fields}
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def forwarded(upstream: ScriptedUpstream) -> dict[str, Any]:
    received = upstream.received()
    assert len(received) == 1, received
    return received[0].body


def use(upstream: ScriptedUpstream, answer: str) -> None:
    """Every request to the scripted upstream answered by the canned `answer`."""
    upstream.behaviour = answer


@pytest.fixture(autouse=True)
def _plain_answers(upstream: ScriptedUpstream) -> Iterator[None]:
    yield
    upstream.behaviour = None


def test_parts_tools_choice_and_history_go_upstream_as_sent(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    messages = [{"role": "user", "content": PARTS}, *HISTORY]
    choice = {"type": "custom", "custom": {"name": "sql"}}
    response = post(
        gateway, api_key, messages=messages, tools=[FUNCTION_TOOL, CUSTOM_TOOL], tool_choice=choice
    )
    assert response.status_code == 200, response.text
    sent = forwarded(upstream)
    # The compatible wire form keeps a part list that is not all text.
    assert sent["messages"][0] == {"role": "user", "content": PARTS}
    assert sent["messages"][2] == {"role": "assistant", "content": "", "tool_calls": [CUSTOM_CALL]}
    assert sent["tools"] == [FUNCTION_TOOL, CUSTOM_TOOL]
    assert sent["tool_choice"] == choice
    assert "modalities" not in sent and "audio" not in sent


def test_allowed_tools_may_name_custom_tools(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    allowed = {"mode": "required", "tools": [{"type": "custom", "custom": {"name": "sql"}}]}
    choice = {"type": "allowed_tools", "allowed_tools": allowed}
    response = post(gateway, api_key, tools=[FUNCTION_TOOL, CUSTOM_TOOL], tool_choice=choice)
    assert response.status_code == 200, response.text
    sent = forwarded(upstream)
    assert (sent["tools"], sent["tool_choice"]) == ([CUSTOM_TOOL], "required")


def test_a_custom_tool_call_comes_back(
    client: OpenAI, api_key: str, upstream: ScriptedUpstream
) -> None:
    use(upstream, "custom-call")
    answer = client.chat.completions.create(
        model=RICH, messages=HISTORY[:1], tools=[CUSTOM_TOOL], max_tokens=5
    )
    ChatCompletion.model_validate(answer.model_dump())
    call = answer.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert isinstance(call, ChatCompletionMessageCustomToolCall)
    assert (call.id, call.custom.name, call.custom.input) == ("call_sql_1", "sql", "SELECT 1")
    assert answer.choices[0].finish_reason == "tool_calls"


def test_a_streamed_custom_tool_call_comes_back_in_pieces(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    use(upstream, "custom-call")
    response = post(gateway, api_key, messages=HISTORY[:1], tools=[CUSTOM_TOOL], stream=True)
    assert response.status_code == 200, response.text
    pieces = [
        call
        for event in sse_events(response.text)
        if isinstance(event, dict)
        for choice in event.get("choices", [])
        for call in choice["delta"].get("tool_calls", [])
    ]
    assert pieces[0] == {
        "index": 0,
        "id": "call_sql_1",
        "type": "custom",
        "custom": {"name": "sql", "input": "SELECT"},
    }
    assert pieces[1:] == [{"index": 0, "custom": {"input": " 1"}}]


def test_audio_output_is_asked_for_and_comes_back(
    client: OpenAI, upstream: ScriptedUpstream
) -> None:
    use(upstream, "audio")
    answer = client.chat.completions.create(
        model=RICH,
        messages=HISTORY[:1],
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "wav"},
        max_tokens=5,
    )
    sent = forwarded(upstream)
    assert (sent["modalities"], sent["audio"]) == (
        ["text", "audio"],
        {"voice": "alloy", "format": "wav"},
    )
    ChatCompletion.model_validate(answer.model_dump())
    audio = answer.choices[0].message.audio
    assert audio is not None and audio.model_dump() == AUDIO
    usage = answer.usage
    assert usage is not None and usage.completion_tokens == 30
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.audio_tokens == 12
    assert usage.completion_tokens_details and usage.completion_tokens_details.audio_tokens == 25


def test_streamed_audio_comes_back_in_pieces(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    use(upstream, "audio")
    audio = {"voice": "alloy", "format": "pcm16"}
    response = post(
        gateway, api_key, messages=HISTORY[:1], modalities=["audio"], audio=audio, stream=True
    )
    assert response.status_code == 200, response.text
    pieces = [
        choice["delta"]["audio"]
        for event in sse_events(response.text)
        if isinstance(event, dict)
        for choice in event.get("choices", [])
        if "audio" in choice["delta"]
    ]
    assert "".join(p.get("transcript", "") for p in pieces) == "Hamburg."
    assert "".join(p.get("data", "") for p in pieces) == "UklGRg=="
    assert pieces[0]["id"] == "audio_1" and pieces[-1]["expires_at"] == 1735693200


# What the embedded model cannot take: the capability's error, naming the parameter.
EMBEDDED_REFUSALS: dict[str, tuple[dict[str, Any], str, str]] = {
    "audio-input": (
        {"messages": [{"role": "user", "content": PARTS[:2]}]},
        "INFERENCE_3210",
        "messages",
    ),
    "file-input": (
        {"messages": [{"role": "user", "content": [PARTS[0], PARTS[3]]}]},
        "INFERENCE_3211",
        "messages",
    ),
    "custom-tool": ({"tools": [CUSTOM_TOOL]}, "INFERENCE_3212", "tools"),
    "custom-call-in-history": ({"messages": HISTORY}, "INFERENCE_3212", "messages[1].tool_calls"),
    "audio-output": (
        {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
        "INFERENCE_3213",
        "modalities",
    ),
}


@pytest.mark.parametrize("case", list(EMBEDDED_REFUSALS), ids=list(EMBEDDED_REFUSALS))
def test_the_embedded_model_refuses_what_it_cannot_take(
    gateway: GatewayProcess, api_key: str, case: str
) -> None:
    fields, code, param = EMBEDDED_REFUSALS[case]
    response = post(gateway, api_key, **{"model": EMBEDDED, "messages": HISTORY[:1], **fields})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")
    assert error["details"] == {"model": EMBEDDED}


def test_a_route_marked_unsupported_is_left_out(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream
) -> None:
    messages = [{"role": "user", "content": [PARTS[0], PARTS[2]]}]
    response = post(gateway, api_key, model=NO_FILE_ROUTE, messages=messages)
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "INFERENCE_3104"
    assert error["details"]["excluded"] == [{"route": "up", "reason": "no file_input"}]
    assert upstream.received() == []


def test_audio_and_files_are_estimated_from_their_size() -> None:
    wav = base64.b64encode(bytes(32_000)).decode()  # one second at 16 kHz, 16-bit mono
    pdf = base64.b64encode(bytes(3_200)).decode()
    parts = [
        {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": pdf}},
        {"type": "file", "file": {"file_id": "file-abc123"}},  # no size here: nothing
    ]
    assert estimate_attachment_tokens([{"role": "user", "content": parts}]) == 10 + 100
