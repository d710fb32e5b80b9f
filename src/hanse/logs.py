"""Structured logs: one JSON object a line. Keys never reach a log: nothing here is given one."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson

_STANDARD = set(vars(logging.makeLogRecord({})))

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The request being served, so that every log line of it carries its id."""


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            entry["request_id"] = current
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class AccessLog:
    """The one line per request, in the JsonFormatter's shape, without logging's machinery.

    Through `logging`, each line built a LogRecord, walked its attributes, formatted its time and
    wrote and flushed stderr under a lock: about a quarter of one worker's throughput
    (docs/benchmarks.md). Here a line is one orjson call; the lines of one turn of the event loop
    leave in one write, at the end of that turn. It writes only while `logger` logs at INFO."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._pending: list[bytes] = []
        self._second = -1
        self._ts = ""

    def write(self, fields: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return
        now = time.time()
        if int(now) != self._second:  # one strftime a second, not one a line
            self._second, self._ts = int(now), _timestamp(now)
        entry = {"ts": self._ts, "level": "info", "logger": self._logger.name, **fields}
        self._pending.append(orjson.dumps(entry, default=str) + b"\n")
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: nothing would flush it later
                self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        sys.stderr.buffer.write(b"".join(pending))
        sys.stderr.buffer.flush()


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("hanse")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # uvicorn's own warnings and errors (a drain timeout, a failed worker) as JSON lines too.
    server = logging.getLogger("uvicorn")
    server.handlers[:] = [handler]
    server.propagate = False
