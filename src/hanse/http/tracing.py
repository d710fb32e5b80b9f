"""OpenTelemetry traces, off by default: one server span per request, in the GenAI semantic
conventions, posted as OTLP/HTTP JSON to a collector's traces URL (every OTLP receiver takes it).

The span is made once the request is answered (a stream: once it ends), from what its `Trace`
gathered, with the time it began: nothing is traced on the way. A client's `traceparent` makes it
a child of the client's span. Spans leave in batches, encoded by orjson in one call and posted from
the event loop. Not the OpenTelemetry SDK: its batch processor built protobuf messages in a thread
holding the GIL, which cost one worker 8-35% of its throughput and took its p99 at one connection
from 3 to over 20 ms (docs/benchmarks.md). A collector that is down or slow costs no request
anything: spans beyond MAX_QUEUED are dropped; that and a failing collector are logged once a
streak.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from hanse.trace import Trace

log = logging.getLogger("hanse.tracing")

BATCH = 256  # spans a batch leaves with at once; fewer leave every INTERVAL_S
INTERVAL_S = 1.0
MAX_QUEUED = 8192
_SERVER = 2  # SpanKind SERVER
_ERROR = 2  # StatusCode ERROR
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_ZERO_TRACE = "0" * 32


class Tracing:
    """Spans for one process, and their export to `endpoint` (e.g. http://host:4318/v1/traces)."""

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        service = os.environ.get("OTEL_SERVICE_NAME", "hanse")
        self._resource = {"attributes": [_attribute("service.name", service)]}
        self._spans: list[dict[str, Any]] = []
        self._session: aiohttp.ClientSession | None = None
        self._sending: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._failing = False
        self._dropping = False

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10), cookie_jar=aiohttp.DummyCookieJar()
        )
        self._timer = asyncio.get_running_loop().call_later(INTERVAL_S, self._tick)

    def record(
        self,
        trace: Trace,
        method: str,
        template: str,
        status: int,
        headers: Mapping[str, str],
        operation: str | None,
    ) -> None:
        """The request's span, ending now; `operation` (`chat`) marks an inference request."""
        if len(self._spans) >= MAX_QUEUED:
            if not self._dropping:
                self._dropping = True
                log.warning("%d spans wait to be sent: new spans are dropped", MAX_QUEUED)
            return
        end = time.time_ns()
        start = end - int((time.perf_counter() - trace.started) * 1e9)
        attributes = [
            _shared("http.request.method", method),
            _shared("http.route", template),
            _shared("http.response.status_code", status),
            _attribute("hanse.request_id", trace.request_id),
            _shared("hanse.attempts", trace.attempts),
        ]
        if trace.account_id is not None:
            attributes.append(_attribute("hanse.account_id", trace.account_id))
        if status >= 400:
            attributes.append(_shared("error.type", trace.error or str(status)))
        name = f"{method} {template}"
        if operation is not None:
            name = f"{operation} {trace.model}" if trace.model else operation
            attributes += _generation(trace, operation)
        span: dict[str, Any] = {
            "spanId": f"{random.getrandbits(64) or 1:016x}",
            "name": name,
            "kind": _SERVER,
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(end),
            "attributes": attributes,
            "status": {"code": _ERROR} if status >= 500 else {},
        }
        parent = _TRACEPARENT.match(headers.get("traceparent", ""))
        if parent is not None and parent[1] != _ZERO_TRACE:
            span["traceId"], span["parentSpanId"] = parent[1], parent[2]
        else:
            span["traceId"] = f"{random.getrandbits(128) or 1:032x}"
        self._spans.append(span)
        if len(self._spans) >= BATCH and self._sending is None and self._session is not None:
            self._send()

    async def close(self) -> None:
        """Send what is queued, then stop."""
        if self._timer is not None:
            self._timer.cancel()
        if self._sending is not None:
            await self._sending
        if self._spans:
            self._send()
            assert self._sending is not None
            await self._sending
        if self._session is not None:
            await self._session.close()

    def _tick(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(INTERVAL_S, self._tick)
        if self._spans and self._sending is None:
            self._send()

    def _send(self) -> None:
        batch, self._spans = self._spans, []
        self._dropping = False
        self._sending = asyncio.ensure_future(self._post(batch))

    async def _post(self, batch: list[dict[str, Any]]) -> None:
        assert self._session is not None
        scope = {"scope": {"name": "hanse"}, "spans": batch}
        body = orjson.dumps(
            {"resourceSpans": [{"resource": self._resource, "scopeSpans": [scope]}]}
        )
        headers = {"Content-Type": "application/json"}
        try:
            async with self._session.post(self._endpoint, data=body, headers=headers) as response:
                failure = f"HTTP {response.status}" if response.status >= 300 else None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            failure = f"{type(exc).__name__}: {exc}"
        finally:
            self._sending = None
        if failure is not None and not self._failing:
            log.warning("traces could not be sent to the collector (%s); dropped", failure)
        elif failure is None and self._failing:
            log.info("traces reach the collector again")
        self._failing = failure is not None


def _generation(trace: Trace, operation: str) -> list[dict[str, Any]]:
    """The GenAI attributes of an inference request (those it reached)."""
    found = [_shared("gen_ai.operation.name", operation)]
    if trace.model is not None:  # as the client named it: not one of a few
        found.append(_attribute("gen_ai.request.model", trace.model))
    if trace.catalog_model is not None:
        found.append(_shared("gen_ai.response.model", trace.catalog_model))
    if trace.route is not None:  # the catalog's route that answered
        found.append(_shared("gen_ai.provider.name", trace.route))
    if trace.usage is not None:
        found.append(_attribute("gen_ai.usage.input_tokens", trace.usage.prompt_tokens))
        found.append(_attribute("gen_ai.usage.output_tokens", trace.usage.completion_tokens))
    if trace.finish_reasons:
        reasons = tuple(trace.finish_reasons)
        found.append(_shared("gen_ai.response.finish_reasons", reasons))
    return found


# Attributes whose values are few (a route, a status, a catalog id) are made once and shared by
# every span that carries them: most of a span's making was these small objects.
_SHARED: dict[tuple[str, str | int | tuple[str, ...]], dict[str, Any]] = {}
_MAX_SHARED = 4096


def _shared(key: str, value: str | int | tuple[str, ...]) -> dict[str, Any]:
    found = _SHARED.get((key, value))
    if found is None:
        if len(_SHARED) >= _MAX_SHARED:
            _SHARED.clear()
        found = _SHARED[(key, value)] = _attribute(key, value)
    return found


def _attribute(key: str, value: str | int | tuple[str, ...]) -> dict[str, Any]:
    return {"key": key, "value": _value(value)}


def _value(value: str | int | tuple[str, ...]) -> dict[str, Any]:
    """An OTLP AnyValue, in protobuf's JSON mapping (64-bit integers as strings)."""
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    return {"arrayValue": {"values": [_value(item) for item in value]}}
