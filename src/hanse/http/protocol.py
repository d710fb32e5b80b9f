"""The HTTP/1.1 connection, bounded: header size, header read time and body read time.

uvicorn's httptools protocol accepts headers of any size and waits forever for a slow client (a
connection that sends nothing, or one byte a minute, is never closed). This subclass closes such
connections with a catalog error before any route runs:
- the request line and headers over `HANSE_MAX_HEADER_BYTES`: 431 (VALIDATION_4310);
- the head not complete `HANSE_HEADER_TIMEOUT_S` after the connection opened or the request began,
  or the body not complete `HANSE_BODY_TIMEOUT_S` after the head: 408 (VALIDATION_4080).
Connections idle between requests are closed by uvicorn's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import functools

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hanse.errors import HEADERS_TOO_LARGE, REQUEST_TIMEOUT, ErrorCode, HanseError
from hanse.settings import Settings


@functools.cache
def connection_limits() -> Settings:
    """This process's settings, read once: `max_header_bytes`, `header_timeout_s`, ..."""
    return Settings()


def refusal_bytes(entry: ErrorCode, message: str) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection."""
    body = orjson.dumps(HanseError(entry, message).body())
    head = (
        f"HTTP/1.1 {entry.status} {_REASONS[entry.status]}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_LINGER_S = 1.0
_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


class HeadWithBody(asyncio.Transport):
    """The transport as one response sees it: its head leaves with what is written next (the
    body, a stream's first event), in one send and one segment, not two; a head with nothing
    after it in this turn of the loop leaves at the end of the turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._first = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._first:  # the head
            self._first = False
            self._head = bytes(data)
            self._loop.call_soon(self._flush)
            return
        if self._head is not None:
            data, self._head = self._head + bytes(data), None
        self._transport.write(data)

    def _flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._flush()
        self._transport.close()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools' protocol with bounded heads and read times (see the module docstring)."""

    _limits: Settings
    _head_bytes = 0
    _in_head = True
    _refused = False
    _timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._limits = connection_limits()
        super().connection_made(transport)
        self._arm(self._limits.header_timeout_s, "The request headers did not arrive in time.")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        in_head = self._in_head
        super().data_received(data)
        if in_head and self._in_head and not self._refused:
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_header_bytes:
                self._refuse(HEADERS_TOO_LARGE, self._too_large())

    def on_message_begin(self) -> None:
        self._in_head, self._head_bytes = True, 0
        if self._timer is None:
            self._arm(self._limits.header_timeout_s, "The request headers did not arrive in time.")
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self._limits.max_header_bytes:
            self._refuse(HEADERS_TOO_LARGE, self._too_large())
            return
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = HeadWithBody(self.transport, self.loop)
        self._arm(self._limits.body_timeout_s, "The request body did not arrive in time.")

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        if not self._refused:
            super().on_message_complete()

    def _too_large(self) -> str:
        return f"The request line and headers are over {self._limits.max_header_bytes} bytes."

    def _arm(self, delay_s: float, message: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay_s, self._timed_out, message)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self, message: str) -> None:
        self._timer = None
        if self.cycle is not None and self.cycle.response_started and not self._in_head:
            self.transport.close()  # too late for an error response: only cut it
            return
        # Whatever the route still sends is dropped: the transport is closed after this answer.
        self._refuse(REQUEST_TIMEOUT, message)

    def _refuse(self, entry: ErrorCode, message: str) -> None:
        self._refused = True
        self._disarm()
        if self.transport.is_closing():
            return
        self.transport.write(refusal_bytes(entry, message))
        # A lingering close: half-close, then read and drop what the client still sends for a
        # moment. Closing with unread bytes would reset the connection and lose the answer.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(_LINGER_S, self.transport.close)
