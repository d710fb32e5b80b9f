"""The cheapest OpenAI-shaped upstream we can write: the floor every gateway is measured against.

A raw asyncio protocol on uvloop (no framework): HTTP/1.1 keep-alive, `POST .../chat/completions`
answered with a fixed JSON body, or, when the body asks for `"stream": true`, an SSE stream of
`--chunks` deltas `--interval-ms` apart. Loopback only.

    python bench/mock_upstream.py --port 9100 [--delay-ms 0] [--chunks 64] [--interval-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import cast

import uvloop

USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
ANSWER = json.dumps(
    {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1735689600,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hamburg, Lübeck, Bremen."},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": USAGE,
    }
).encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(ANSWER)).encode()
    + b"\r\n\r\n"
    + ANSWER
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def _chunk(delta: dict[str, object], finish: str | None = None, usage: bool = False) -> bytes:
    body: dict[str, object] = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1735689600,
        "model": "bench-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        body["choices"] = []
        body["usage"] = {"prompt_tokens": 12, "completion_tokens": 64, "total_tokens": 76}
    event = b"data: " + json.dumps(body).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


class MockProtocol(asyncio.Protocol):
    def __init__(self, delay_s: float, chunks: int, interval_s: float) -> None:
        self.delay_s = delay_s
        self.chunks = chunks
        self.interval_s = interval_s
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(
            asyncio.Transport, transport
        )  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = _content_length(head)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            streaming = b'"stream":true' in body.replace(b" ", b"")
            asyncio.get_running_loop().create_task(self.answer(streaming))

    async def answer(self, streaming: bool) -> None:
        transport = self.transport
        assert transport is not None
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if not streaming:
            transport.write(RESPONSE)
            return
        transport.write(STREAM_HEAD + _chunk({"role": "assistant", "content": ""}))
        for index in range(self.chunks):
            await asyncio.sleep(self.interval_s)
            if transport.is_closing():
                return
            transport.write(_chunk({"content": f"t{index} "}))
        transport.write(
            _chunk({}, finish="stop") + _chunk({}, usage=True) + _sse_done() + b"0\r\n\r\n"
        )


def _content_length(head: bytes) -> int:
    start = head.find(b"content-length:")
    if start < 0:
        return 0
    line_end = head.find(b"\r\n", start)
    return int(head[start + 15 : line_end if line_end >= 0 else len(head)])


def _sse_done() -> bytes:
    event = b"data: [DONE]\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


async def serve(port: int, delay_s: float, chunks: int, interval_s: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: MockProtocol(delay_s, chunks, interval_s), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--delay-ms", type=float, default=0)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--interval-ms", type=float, default=20)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.delay_ms / 1000, args.chunks, args.interval_ms / 1000))


if __name__ == "__main__":
    main()
