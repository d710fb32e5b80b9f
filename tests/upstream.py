"""A scripted OpenAI-shaped upstream on 127.0.0.1: it records what it received and answers as the
request's `model` (the route's `upstream_model`) says, unless a test set `behaviour` on it.
Several can run at once, each on its own port, one per provider.

    ok              a normal answer, or an SSE stream (with a usage chunk when asked)
    tools           a tool call (streamed as tool-call deltas)
    fail-500        500 with an OpenAI error body
    rate-limit      429 with Retry-After: 7 (`rate-limit-<s>`: Retry-After: <s>)
    slow-<ms>       waits <ms> milliseconds, then answers as `ok`
    drip-<ms>       a stream whose chunks come <ms> milliseconds apart (a long answer: set `pieces`)
    reset           closes the connection (TCP reset) without answering
    hang            waits longer than any test's read timeout before answering
    malformed       200 with a body that is not JSON (or a stream whose chunk is not JSON)
    bad-request     400 with an OpenAI error body
    content-filter  400 whose error code is content_filter
    cut-mid-stream  two SSE chunks, then the connection is dropped (no final chunk, no [DONE])
    ends-without-done  two SSE chunks, then a clean end of a close-delimited body (no [DONE])
    stall-mid-stream  two SSE chunks (or part of the JSON body), then silence past any read timeout
    unauthorized    401, echoing the key it was given (as OpenAI does)
    json-valid      a JSON answer ({"city": "Hamburg"}); json-fenced: the same in a ```json fence
    json-repair     prose, then valid JSON when the request is a repair (its last message asks again)
    json-never      prose, whatever it is asked

A test may also give any upstream model a fixed answer (`canned[model] = Canned(...)`): a status,
headers and a body, or the raw events of a stream, to play a provider that misbehaves exactly so.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FINGERPRINT = "fp_upstream_42"
HANG_S = 5.0
ANSWER = "Lübeck, Hamburg, Bremen."
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
TOOL_ARGUMENTS = '{"city": "Hamburg"}'
JSON_ANSWER = '{"city": "Hamburg"}'
PROSE_ANSWER = "The city is Hamburg."


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the upstream saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Canned:
    """A fixed answer. `body` (JSON-encoded unless bytes) answers a plain request; `events` (each
    JSON-encoded unless bytes, sent as `data:` lines, then `[DONE]` when `done`) a stream, and a
    stream request falls back to `body` when `events` is None. `cut` drops the connection after the
    events instead of ending the body."""

    status: int = 200
    body: Any = None
    events: list[Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    done: bool = True
    cut: bool = False


class ScriptedUpstream:
    """A threaded HTTP server in the background; `base_url` ends in /v1."""

    def __init__(self) -> None:
        # Fixed answers by upstream model, ahead of the scripted behaviours.
        self.canned: dict[str, Canned] = {}
        self.requests: list[Received] = []
        # When set, every request is answered this way, whatever model it names.
        self.behaviour: str | None = None
        # When set, `ok` answers say these pieces (streamed as one chunk each) instead of ANSWER.
        self.pieces: list[str] | None = None
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.upstream = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> ScriptedUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def record(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def received(self, model: str | None = None) -> list[Received]:
        """What arrived so far, optionally only for one upstream model."""
        with self._lock:
            return [r for r in self.requests if model is None or r.body.get("model") == model]


def _completion(model: str, message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 1735689600,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": USAGE,
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1735689600,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def _tool_call(arguments: str, first: bool) -> dict[str, Any]:
    call: dict[str, Any] = {"index": 0, "function": {"arguments": arguments}}
    if first:
        call.update(id="call_up_1", type="function")
        call["function"]["name"] = "get_weather"
    return call


def _stream_chunks(
    model: str, body: dict[str, Any], pieces: list[str] | None = None
) -> list[dict[str, Any]]:
    role = {"role": "assistant", "content": ""}
    if model == "tools":
        chunks = [
            _chunk(model, {**role, "tool_calls": [_tool_call("", True)]}),
            _chunk(model, {"tool_calls": [_tool_call(TOOL_ARGUMENTS[:9], False)]}),
            _chunk(model, {"tool_calls": [_tool_call(TOOL_ARGUMENTS[9:], False)]}),
            _chunk(model, {}, "tool_calls"),
        ]
    else:
        words = pieces or ["Lübeck, ", "Hamburg, ", "Bremen."]
        chunks = [_chunk(model, role)]
        chunks += [_chunk(model, {"content": word}) for word in words]
        chunks.append(_chunk(model, {}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append({**_chunk(model, {}), "choices": [], "usage": USAGE})
    return chunks


def _json_answer(model: str, body: dict[str, Any]) -> str:
    repair = "required format" in str(body["messages"][-1].get("content"))
    if model == "json-valid" or (model == "json-repair" and repair):
        return JSON_ANSWER
    if model == "json-fenced":
        return f"```json\n{JSON_ANSWER}\n```"
    return PROSE_ANSWER


def _error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def upstream(self) -> ScriptedUpstream:
        return self.server.upstream  # type: ignore[attr-defined, no-any-return]

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw)
        self.upstream.record(Received(self.path, dict(self.headers.items()), body))
        if self.path != "/v1/chat/completions":
            self._json(404, _error("not found", "invalid_request_error", None))
            return
        try:
            self._answer(self.upstream.behaviour or str(body.get("model")), body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _answer(self, model: str, body: dict[str, Any]) -> None:
        stream = bool(body.get("stream"))
        canned = self.upstream.canned.get(model)
        if canned is not None:
            self._canned(canned, stream)
            return
        if model.startswith("slow-"):
            time.sleep(int(model.removeprefix("slow-")) / 1000)
            model = "ok"
        if model == "fail-500":
            self._json(500, _error("upstream exploded", "server_error", None))
        elif model.startswith("rate-limit"):
            wait = model.removeprefix("rate-limit").removeprefix("-") or "7"
            self._json(429, _error("slow down", "rate_limit_error", None), {"Retry-After": wait})
        elif model == "reset":
            # SO_LINGER with a zero timeout: close() sends RST rather than a clean FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif model == "unauthorized":
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            self._json(401, _error(f"Incorrect API key provided: {key}", "auth", "invalid_key"))
        elif model == "bad-request":
            message = "temperature is too spicy for this upstream"
            self._json(400, _error(message, "invalid_request_error", "invalid_value"))
        elif model == "content-filter":
            message = "The response was filtered by the upstream's policy."
            self._json(400, _error(message, "invalid_request_error", "content_filter"))
        elif model == "hang":
            self.upstream.stopping.wait(HANG_S)
            self._json(200, _completion(model, {"role": "assistant", "content": "late"}, "stop"))
        elif model == "malformed" and not stream:
            self._send(200, b'{"id": "chatcmpl-x", "choices": [', "application/json")
        elif model == "stall-mid-stream" and not stream:
            self._stall_body(model)
        elif model.startswith("drip-") and stream:
            self._stream(model, body, gap_s=int(model.removeprefix("drip-")) / 1000)
        elif stream:
            self._stream(model, body)
        elif model.startswith("json-"):
            answer = {"role": "assistant", "content": _json_answer(model, body)}
            self._json(200, _completion(model, answer, "stop"))
        elif model == "tools":
            call = {
                "id": "call_up_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS},
            }
            answer = {"role": "assistant", "content": None, "tool_calls": [call]}
            self._json(200, _completion(model, answer, "tool_calls"))
        else:
            content = "".join(self.upstream.pieces) if self.upstream.pieces else ANSWER
            self._json(200, _completion(model, {"role": "assistant", "content": content}, "stop"))

    def _canned(self, canned: Canned, stream: bool) -> None:
        if not stream or canned.events is None:
            data = canned.body if isinstance(canned.body, bytes) else json.dumps(canned.body)
            raw = data if isinstance(data, bytes) else data.encode()
            self._send(canned.status, raw, canned.content_type, canned.headers)
            return
        self.send_response(canned.status)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in canned.headers.items():
            self.send_header(name, value)
        self.end_headers()
        for event in canned.events:
            data = event if isinstance(event, bytes) else json.dumps(event).encode()
            self._write_chunk(b"data: " + data + b"\n\n")
        if canned.cut:
            self.close_connection = True
            return
        if canned.done:
            self._write_chunk(b"data: [DONE]\n\n")
        self._end_chunked()

    def _stall_body(self, model: str) -> None:
        answer = {"role": "assistant", "content": ANSWER}
        data = json.dumps(_completion(model, answer, "stop")).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:20])
        self.wfile.flush()
        self.upstream.stopping.wait(HANG_S)
        self.close_connection = True

    def _stream(self, model: str, body: dict[str, Any], gap_s: float = 0.0) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if model == "ends-without-done":
            self.send_header("Connection", "close")
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if model == "malformed":
            self._write_chunk(b"data: {not json\n\n")
            self._end_chunked()
            return
        chunks = _stream_chunks(model, body, self.upstream.pieces)
        if model == "ends-without-done":
            # A close-delimited body that just stops: a clean EOF, but the answer is unfinished.
            for chunk in chunks[:2]:
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.close_connection = True
            return
        if model in ("cut-mid-stream", "stall-mid-stream"):
            for chunk in chunks[:2]:
                self._write_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if model == "stall-mid-stream":
                self.upstream.stopping.wait(HANG_S)
            self.close_connection = True  # closed mid-body: no terminating chunk, no [DONE]
            return
        for chunk in chunks:
            if gap_s and self.upstream.stopping.wait(gap_s):
                self.close_connection = True
                return
            self._write_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self._write_chunk(b"data: [DONE]\n\n")
        self._end_chunked()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
