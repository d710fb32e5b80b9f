"""An openai_compatible route to a real upstream: llama-cpp-python's OpenAI server (tests/llama_server.py).

What the gateway sends must be served by a server it did not write (the compatible wire form), and
what the server answers must reach the client as it said it: content, streams, usage.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from hanse.providers.local import embedded_model_path
from tests.harness import GatewayProcess, assert_schema, sse_events
from tests.llama_server import ALIAS, LlamaServer

HELLO = [{"role": "user", "content": "Name three Hanseatic cities."}]
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Hamburg"}'},
}
# What a current OpenAI client sends: llama_cpp.server rejects `developer` as it is.
MODERN = [
    {"role": "developer", "content": "Answer in one short sentence."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is the weather"},
            {"type": "text", "text": "in Hamburg?"},
        ],
    },
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "Rain, 12 degrees."},
    {"role": "user", "content": "So, should I take an umbrella?"},
]
GREEDY = {"max_tokens": 6, "temperature": 0, "seed": 7}


def catalog(base_url: str) -> str:
    text = ""
    for provider, form in (("llama", "compatible"), ("llama-modern", "modern")):
        text += (
            f'[[providers]]\nid = "{provider}"\nkind = "openai_compatible"\n'
            f'base_url = "{base_url}"\nwire_form = "{form}"\nread_timeout_s = 60\n\n'
        )
    for model, provider in (("smollm2-upstream", "llama"), ("smollm2-modern", "llama-modern")):
        text += (
            f'[[models]]\nid = "{model}"\ncontext_length = 2048\n'
            f'[[models.routes]]\nprovider = "{provider}"\nupstream_model = "{ALIAS}"\n\n'
        )
    # Priced as the examples (2 / 6 EUR per million tokens), counted with the model's GGUF
    # where the server reports no usage (its streams).
    text += (
        f'[[models]]\nid = "smollm2-priced"\ncontext_length = 2048\n'
        f'tokenizer = "gguf:{embedded_model_path()}"\n'
        f'[[models.routes]]\nprovider = "llama"\nupstream_model = "{ALIAS}"\n'
        'input_eur_per_million = "2"\noutput_eur_per_million = "6"\n\n'
    )
    return text


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(Path(tmp_path_factory.mktemp("llama"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, llama: LlamaServer
) -> Iterator[GatewayProcess]:
    workdir = Path(tmp_path_factory.mktemp("gateway"))
    process = GatewayProcess(workdir, config=catalog(llama.base_url)).start()
    yield process
    process.stop()


def post(gateway: GatewayProcess, api_key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json=body,
        timeout=120,
    )


def test_modern_messages_are_served_by_the_real_server(
    gateway: GatewayProcess, api_key: str
) -> None:
    response = post(gateway, api_key, {"model": "smollm2-upstream", "messages": MODERN, **GREEDY})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_schema("CreateChatCompletionResponse", body)
    assert body["choices"][0]["message"]["content"]
    assert response.headers["x-hanse-provider"] == "llama"


def test_modern_form_is_refused_by_it_and_sanitised(
    gateway: GatewayProcess, api_key: str, llama: LlamaServer
) -> None:
    # Sent as is, `developer` makes llama_cpp.server answer 500 with a traceback and file paths.
    response = post(gateway, api_key, {"model": "smollm2-modern", "messages": MODERN, **GREEDY})
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "INFERENCE_3103"
    assert error["details"]["attempts"] == [
        {"route": "llama-modern", "reason": "server", "status": 500}
    ]
    for leak in ("developer", "File ", "site-packages", "127.0.0.1", str(llama.port)):
        assert leak not in response.text, leak


def test_usage_is_what_the_server_reported(
    gateway: GatewayProcess, api_key: str, llama: LlamaServer
) -> None:
    answer = post(gateway, api_key, {"model": "smollm2-upstream", "messages": HELLO, **GREEDY})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert_schema("CreateChatCompletionResponse", body)
    direct = httpx.post(
        f"{llama.base_url}/chat/completions",
        json={"model": ALIAS, "messages": HELLO, **GREEDY},
        timeout=120,
    ).json()
    assert body["usage"] == direct["usage"]
    assert body["usage"]["completion_tokens"] == GREEDY["max_tokens"]
    assert body["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == direct["choices"][0]["finish_reason"] == "length"


def test_stream_is_relayed(gateway: GatewayProcess, api_key: str) -> None:
    request = {"model": "smollm2-upstream", "messages": HELLO, **GREEDY}
    whole = post(gateway, api_key, request).json()["choices"][0]["message"]["content"]
    response = post(
        gateway, api_key, {**request, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        assert_schema("CreateChatCompletionStreamResponse", event)
        assert event["model"] == "smollm2-upstream"
    choices = [c for e in events[:-1] for c in e["choices"]]
    assert choices[0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert "".join(c["delta"].get("content") or "" for c in choices) == whole
    assert choices[-1]["finish_reason"] == "length"
    assert events[-2]["choices"] == [] and "usage" in events[-2]


PRICE_IN_PICO, PRICE_OUT_PICO = 2_000_000, 6_000_000  # per token: 2 and 6 EUR per million


def _ledger(gateway: GatewayProcess, request_id: str) -> dict[str, Any]:
    rows = gateway.sql(
        "SELECT status, prompt_tokens, completion_tokens, usage_source, cost_pico, unpaid_pico "
        "FROM ledger WHERE request_id = :id",
        id=request_id,
    )
    assert len(rows) == 1, rows
    return rows[0]


def test_money_is_exact_for_reported_and_counted_usage(gateway: GatewayProcess) -> None:
    key = gateway.create_key(account="llama-priced")
    topup = gateway.cli("accounts", "topup", "llama-priced", "--credits", "10")
    assert topup.returncode == 0, topup.stderr
    request = {"model": "smollm2-priced", "messages": HELLO, **GREEDY}
    whole = post(gateway, key, request)
    assert whole.status_code == 200, whole.text
    usage = whole.json()["usage"]
    row = _ledger(gateway, whole.headers["x-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert row["usage_source"] == "reported"
    cost = usage["prompt_tokens"] * PRICE_IN_PICO + usage["completion_tokens"] * PRICE_OUT_PICO
    assert (row["cost_pico"], row["unpaid_pico"]) == (cost, 0)
    assert Decimal(whole.json()["billing_cost"]["credits"]) * 10**12 == cost

    # llama_cpp.server sends no usage in a stream: the gateway counts it with the GGUF.
    streamed = post(gateway, key, {**request, "stream": True})
    assert streamed.status_code == 200, streamed.text
    row = _ledger(gateway, streamed.headers["x-request-id"])
    assert row["usage_source"] == "counted"
    assert abs(row["completion_tokens"] - usage["completion_tokens"]) <= 1
    assert row["prompt_tokens"] >= usage["prompt_tokens"] * 0.8
    counted = row["prompt_tokens"] * PRICE_IN_PICO + row["completion_tokens"] * PRICE_OUT_PICO
    assert (row["cost_pico"], row["unpaid_pico"]) == (counted, 0)
