"""`logit_bias` is honoured by the embedded model and forwarded to upstreams, as OpenAI takes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import llama_cpp
import pytest
from openai import OpenAI

from hanse.providers.local import embedded_model_path
from tests.harness import GatewayProcess
from tests.upstream import ScriptedUpstream

MODEL = "smollm2-135m"
ASK = [{"role": "user", "content": "Name one Hanseatic city."}]


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[GatewayProcess]:
    config = (
        f'[[providers]]\nid = "local"\nkind = "local"\n\n'
        f'[[providers]]\nid = "up"\nkind = "openai_compatible"\nbase_url = "{upstream.base_url}"\n\n'
        f'[[models]]\nid = "{MODEL}"\ncontext_length = 8192\n'
        '[[models.routes]]\nprovider = "local"\n\n'
        '[[models]]\nid = "upstream"\ncontext_length = 4096\n'
        '[[models.routes]]\nprovider = "up"\nupstream_model = "ok"\n'
    )
    process = GatewayProcess(Path(tmp_path_factory.mktemp("bias")), config=config).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def vocabulary() -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path=embedded_model_path(), vocab_only=True, verbose=False)


def _greedy(client: OpenAI, bias: dict[str, int] | None = None) -> str:
    answer = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=3, temperature=0, logit_bias=bias
    )
    return answer.choices[0].message.content or ""


def test_a_banned_token_is_never_sampled(client: OpenAI, vocabulary: llama_cpp.Llama) -> None:
    first = _greedy(client)
    assert first
    token = vocabulary.tokenize(first.encode(), add_bos=False, special=False)[0]
    again = _greedy(client, {str(token): -100})
    assert again
    assert vocabulary.tokenize(again.encode(), add_bos=False, special=False)[0] != token


def test_a_favoured_token_is_sampled(client: OpenAI, vocabulary: llama_cpp.Llama) -> None:
    token = vocabulary.tokenize(b" Hamburg", add_bos=False, special=False)[0]
    assert _greedy(client, {str(token): 100}) == " Hamburg Hamburg Hamburg"  # nothing else


def test_it_is_forwarded_to_an_upstream(client: OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.clear()
    client.chat.completions.create(model="upstream", messages=ASK, logit_bias={"50256": -100})
    assert upstream.received()[0].body["logit_bias"] == {"50256": -100}


@pytest.mark.parametrize("bias", [{"abc": 1}, {"1": 101}, {"1": -101}, {"1": 1.5}])
def test_a_malformed_bias_is_refused(gateway: GatewayProcess, api_key: str, bias: object) -> None:
    response = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": MODEL, "messages": ASK, "logit_bias": bias},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"].startswith("VALIDATION_400")
    assert response.json()["error"]["param"].startswith("logit_bias")
