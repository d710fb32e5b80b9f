"""No request freezes the gateway for the others: while each hostile request below is served, a
bystander's `/health` keeps being answered quickly.

The bystander asks every 20 ms on its own connection; its median wait must stay under 100 ms and
its worst under 500 ms (room for a loaded CI machine; a frozen loop would show seconds).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.harness import GatewayProcess

MODEL = "smollm2-135m"


class Bystander:
    """Asks `/health` every 20 ms in a thread and keeps the waits."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self._stop = threading.Event()
        self.waits: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Bystander:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(base_url=self._base_url, timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                assert client.get("/health").status_code == 200
                self.waits.append(time.perf_counter() - started)
                self._stop.wait(0.02)


@pytest.fixture(scope="module")
def post(gateway: GatewayProcess, api_key: str) -> Iterator[Callable[[Any], httpx.Response]]:
    with httpx.Client(base_url=gateway.base_url, timeout=120) as client:

        def send(body: Any) -> httpx.Response:
            headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
            content = (
                body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).read()
            )
            return client.post("/v1/chat/completions", content=content, headers=headers)

        yield send


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


CATASTROPHIC_INPUT_RULE = {
    "name": "g",
    "railguards": {"input": [{"type": "deny_pattern", "pattern": "(a|a){1,24}b"}]},
}
HOSTILE: dict[str, tuple[Any, int]] = {
    "catastrophic input railguard": (
        {
            "model": MODEL,
            "messages": _messages("a" * 100_000),
            "max_tokens": 1,
            "blueprint_config": CATASTROPHIC_INPUT_RULE,
        },
        400,  # the prompt is over the model's context, after the guard ran over all of it
    ),
    "catastrophic schema pattern and a remote $ref": (
        {
            "model": MODEL,
            "messages": _messages("Hi"),
            "max_tokens": 2,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "schema": {
                        "type": "object",
                        "properties": {
                            "a": {"type": "string", "pattern": "^(a|a){1,24}b$"},
                            "b": {"$ref": "http://10.255.255.1/slow.json"},
                        },
                    },
                },
            },
        },
        400,
    ),
    "a 3.9M-character prompt": ({"model": MODEL, "messages": _messages("hello " * 650_000)}, 400),
    "JSON nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, 400),
    "a 30 MB body": ({"model": MODEL, "messages": _messages("x" * 30_000_000)}, 400),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(HOSTILE))
def test_the_others_are_answered_meanwhile(
    gateway: GatewayProcess, post: Callable[[Any], httpx.Response], name: str
) -> None:
    body, status = HOSTILE[name]
    with Bystander(gateway.base_url) as bystander:
        time.sleep(0.1)
        response = post(body)
        time.sleep(0.1)
    assert response.status_code == status, response.text[:300]
    assert statistics.median(bystander.waits) < 0.1
    assert max(bystander.waits) < 0.5, f"the bystander waited {max(bystander.waits):.2f} s"
