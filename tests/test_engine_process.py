"""The embedded engine's child process: it answers as `LlamaEngine` does, and its death is contained.

A real child with the real SmolLM2 weights; the crash is a real SIGSEGV sent to it mid-generation.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from hanse.providers.engine_process import EngineCrashed, EngineProcess
from hanse.providers.llama_engine import (
    Cancelled,
    GrammarRefused,
    Outcome,
    Piece,
    SamplingParams,
    json_schema_grammar,
)
from hanse.providers.local import embedded_model_path
from tests.harness import GatewayProcess

MESSAGES = [{"role": "user", "content": "Count from one to twenty."}]


@pytest.fixture(scope="module")
def engine() -> Iterator[EngineProcess]:
    process = EngineProcess(embedded_model_path(), n_ctx=2048, n_threads=2)
    yield process
    process.close()


def _generate(
    engine: EngineProcess, max_tokens: int, cancelled: threading.Event | None = None
) -> list[Piece | Outcome]:
    tokens = engine.prompt_tokens(MESSAGES)
    params = SamplingParams(max_tokens=max_tokens, temperature=0, seed=1)
    return list(engine.generate(tokens, params, cancelled or threading.Event()))


def test_it_tokenizes_and_generates(engine: EngineProcess) -> None:
    assert engine.pid is not None and engine.pid != os.getpid()
    items = _generate(engine, 8)
    outcome = items[-1]
    assert isinstance(outcome, Outcome)
    assert 1 <= outcome.completion_tokens <= 8
    assert "".join(i.text for i in items if isinstance(i, Piece)).strip()


def test_a_grammar_refusal_crosses_the_pipe(engine: EngineProcess) -> None:
    engine.check_grammar(json_schema_grammar({"type": "object"}))
    with pytest.raises(GrammarRefused, match="refused"):
        engine.check_grammar('root ::= "a" ' + " ".join(f"r{i}" for i in range(5)))


def test_a_cancelled_generation_stops(engine: EngineProcess) -> None:
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(Cancelled):
        _generate(engine, 200, cancelled)


def test_a_crash_fails_the_call_and_the_engine_comes_back(engine: EngineProcess) -> None:
    tokens = engine.prompt_tokens(MESSAGES)
    params = SamplingParams(max_tokens=500, temperature=0.7, seed=2)
    pid = engine.pid
    assert pid is not None
    pieces = engine.generate(tokens, params, threading.Event())
    next(pieces)  # generating now
    os.kill(pid, signal.SIGSEGV)
    started = time.perf_counter()
    with pytest.raises(EngineCrashed):
        for _ in pieces:
            pass
    assert time.perf_counter() - started < 5
    assert engine.wait_ready(120)
    assert engine.pid != pid
    assert engine.restarts == 1
    assert isinstance(_generate(engine, 4)[-1], Outcome)


def _engine_pid(gateway: GatewayProcess) -> int:
    """The engine's process: the gateway's child started by multiprocessing's spawn."""
    assert gateway.process is not None
    for child in Path(f"/proc/{gateway.process.pid}/task").glob("*/children"):
        for pid in child.read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                return int(pid)
    raise AssertionError("no engine process under the gateway")


def test_a_crashed_engine_is_a_provider_failure_and_the_gateway_lives_on(
    gateway: GatewayProcess, client: OpenAI
) -> None:
    pid = _engine_pid(gateway)
    results: list[BaseException | str] = []

    def ask() -> None:
        try:
            answer = client.chat.completions.create(
                model="smollm2-135m",
                messages=[{"role": "user", "content": "Write a long story about Lübeck."}],
                max_tokens=400,
            )
            results.append(answer.choices[0].message.content or "")
        except BaseException as exc:
            results.append(exc)

    asker = threading.Thread(target=ask)
    asker.start()
    time.sleep(2)  # generating now
    os.kill(pid, signal.SIGSEGV)
    asker.join(60)
    assert len(results) == 1
    error = results[0]
    assert isinstance(error, openai.APIStatusError), error
    assert error.status_code == 502
    assert error.code == "INFERENCE_3103"
    assert httpx.get(f"{gateway.base_url}/health", timeout=5).status_code == 200
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the engine comes back
        try:
            answer = client.chat.completions.create(
                model="smollm2-135m", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
            )
            break
        except openai.APIStatusError:
            time.sleep(1)
    else:
        raise AssertionError("the engine did not come back")
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert _engine_pid(gateway) != pid
    assert "the embedded engine died; restarting it" in gateway.log()
