"""OpenTelemetry traces: a gateway pointed at a loopback OTLP/HTTP collector sends one span a
request (OTLP's JSON encoding), in the GenAI semantic conventions, child of the client's
`traceparent`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import GatewayProcess, free_port
from tests.upstream import ScriptedUpstream

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Collector(ThreadingHTTPServer):
    """Receives OTLP/HTTP JSON exports on 127.0.0.1 and keeps their spans."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Export)
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"

    def span(self, request_id: str, timeout: float = 20) -> dict[str, Any]:
        """The span of the request with this id, once it has been exported."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [
                    s for s in self.spans if attributes(s).get("hanse.request_id") == request_id
                ]
            if found:
                [span] = found
                return span
            time.sleep(0.05)
        raise AssertionError(f"no span for {request_id}")


class _Export(BaseHTTPRequestHandler):
    server: Collector

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        assert self.headers["Content-Type"] == "application/json"
        export = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            for resource in export["resourceSpans"]:
                for scope in resource["scopeSpans"]:
                    self.server.spans.extend(scope["spans"])
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


def _value(value: dict[str, Any]) -> Any:
    [(kind, found)] = value.items()
    if kind == "arrayValue":
        return [_value(item) for item in found["values"]]
    return int(found) if kind == "intValue" else found


def attributes(span: dict[str, Any]) -> dict[str, Any]:
    return {item["key"]: _value(item["value"]) for item in span["attributes"]}


CATALOG = """
[[providers]]
id = "up"
kind = "openai_compatible"
base_url = "{base_url}"

[[models]]
id = "traced"
context_length = 4096
  [[models.routes]]
  provider = "up"
  upstream_model = "ok"
"""


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream, collector: Collector
) -> Iterator[GatewayProcess]:
    env = {"HANSE_TRACES_ENDPOINT": collector.url}
    workdir = Path(tmp_path_factory.mktemp("traced"))
    process = GatewayProcess(workdir, CATALOG.format(base_url=upstream.base_url), env).start()
    yield process
    process.stop()


def _chat(gateway: GatewayProcess, key: str, **extra: Any) -> httpx.Response:
    body = {"model": "traced", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", **extra.pop("headers", {})},
        json={**body, **extra},
        timeout=30,
    )


def test_a_completion_is_one_server_span_in_the_clients_trace(
    traced: GatewayProcess, collector: Collector
) -> None:
    key = traced.create_key()
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    response = _chat(traced, key, headers={"traceparent": traceparent})
    assert response.status_code == 200, response.text
    span = collector.span(response.headers["x-request-id"])
    assert span["traceId"] == TRACE_ID and span["parentSpanId"] == PARENT_ID
    assert span["kind"] == 2 and span["name"] == "chat traced"  # SPAN_KIND_SERVER
    assert int(span["endTimeUnixNano"]) > int(span["startTimeUnixNano"])
    assert span["status"] == {}
    found = attributes(span)
    usage = response.json()["usage"]
    assert found["gen_ai.operation.name"] == "chat"
    assert found["gen_ai.request.model"] == "traced"
    assert found["gen_ai.response.model"] == "traced"
    assert found["gen_ai.provider.name"] == "up"
    assert found["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert found["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert found["gen_ai.response.finish_reasons"] == ["stop"]
    assert (
        found["http.response.status_code"] == 200 and found["http.route"] == "/v1/chat/completions"
    )
    assert "error.type" not in found


def test_a_streams_span_ends_with_it_and_carries_its_usage(
    traced: GatewayProcess, collector: Collector
) -> None:
    key = traced.create_key()
    response = _chat(traced, key, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200
    events = [line for line in response.text.splitlines() if line.startswith("data: {")]
    assert events
    span = collector.span(response.headers["x-request-id"])
    found = attributes(span)
    assert span["traceId"] != TRACE_ID and "parentSpanId" not in span  # a trace of its own
    assert found["gen_ai.usage.output_tokens"] > 0
    assert found["gen_ai.response.finish_reasons"] == ["stop"]


def test_a_refused_request_has_the_catalogs_error_type(
    traced: GatewayProcess, collector: Collector
) -> None:
    response = _chat(traced, "sk-mel-not-a-key")
    assert response.status_code == 401
    found = attributes(collector.span(response.headers["x-request-id"]))
    assert found["error.type"] == response.json()["error"]["code"]
    assert found["http.response.status_code"] == 401
    assert "gen_ai.usage.input_tokens" not in found


def test_a_malformed_traceparent_starts_a_trace_of_its_own(
    traced: GatewayProcess, collector: Collector
) -> None:
    response = _chat(traced, traced.create_key(), headers={"traceparent": f"00-{'0' * 32}-x-01"})
    assert response.status_code == 200
    span = collector.span(response.headers["x-request-id"])
    assert len(span["traceId"]) == 32 and span["traceId"] != "0" * 32
    assert "parentSpanId" not in span


def test_a_collector_that_is_down_costs_requests_nothing(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1/traces"
    config = CATALOG.format(base_url=upstream.base_url)
    gateway = GatewayProcess(tmp_path, config, {"HANSE_TRACES_ENDPOINT": closed}).start()
    try:
        key = gateway.create_key()
        for _ in range(3):
            assert _chat(gateway, key).status_code == 200
            time.sleep(0.6)  # past an export interval: the export fails meanwhile
    finally:
        gateway.stop()
    warnings = [line for line in gateway.log().splitlines() if "traces could not be sent" in line]
    assert len(warnings) == 1  # once a streak, not once a batch
