"""The HTTP edge: the Starlette app, its routes (thin) and error -> response mapping."""

from __future__ import annotations

import functools
import gc
import logging
import re
import secrets
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from hanse import logs
from hanse.auth import SCOPE_MODELS, require_scope
from hanse.config.loader import load_catalog
from hanse.errors import (
    INTERNAL,
    INVALID_VALUE,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    NOT_READY,
    UNKNOWN_MODEL,
    HanseError,
)
from hanse.faces.messages.render import error_body as anthropic_error_body
from hanse.gateway import Gateway
from hanse.http import admin, inference, vault
from hanse.http.body import BodyLimit
from hanse.http.hot import HotPaths
from hanse.http.models import model_list, model_object
from hanse.http.openapi import openapi_document
from hanse.http.paths import TrailingSlash
from hanse.http.responses import JSONResponse
from hanse.http.tracing import Tracing
from hanse.pipeline import authenticate
from hanse.routing.attempts import ATTEMPTS_HEADER
from hanse.settings import Settings
from hanse.trace import Trace
from hanse.usage import EPOCH, parse_time, usage_report

log = logging.getLogger("hanse.http")
access_log = logs.AccessLog(log)
CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
RESPONSES_PATH = "/v1/responses"
INFERENCE_PATHS = {CHAT_PATH, MESSAGES_PATH, RESPONSES_PATH}
CLIENT_CLOSED = 499  # as nginx logs a request its client closed before the answer
UNMATCHED = "unmatched"  # the `path` label of requests that no route serves
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

Handler = Callable[[Request, Gateway, Trace], Awaitable[Response]]


# An error in a face's shape: OpenAI's (the catalog's own `body()`) or Anthropic's.
ErrorBody = Callable[[HanseError, str], dict[str, Any]]


def openai_error_body(error: HanseError, request_id: str) -> dict[str, Any]:
    return error.body()


def error_response(
    error: HanseError, request_id: str, render: ErrorBody = openai_error_body
) -> JSONResponse:
    headers = {**error.headers, "X-Request-ID": request_id}
    try:
        return JSONResponse(
            render(error, request_id), status_code=error.error.status, headers=headers
        )
    except orjson.JSONEncodeError:  # details that cannot be encoded must not turn into a bare 500
        log.exception("unencodable error details", extra={"code": error.error.code})
        plain = HanseError(error.error, error.message, param=error.param)
        return JSONResponse(
            render(plain, request_id), status_code=error.error.status, headers=headers
        )


def endpoint(
    handler: Handler, template: str, render_error: ErrorBody = openai_error_body
) -> Callable[[Request], Awaitable[Response]]:
    """Wraps a handler: request id, catalog errors (in the face's shape), no internals leaked,
    one log line.

    Metrics are labelled with the route's `template`, never the raw path, and with the catalog's
    model id, never the client's string: label sets stay bounded whatever clients send."""

    async def run(request: Request) -> Response:
        supplied = request.headers.get("x-request-id", "")
        trace = Trace(request_id=supplied if _REQUEST_ID.match(supplied) else _new_request_id())
        gateway: Gateway = request.app.state.gateway
        logs.request_id.set(trace.request_id)
        try:
            response = await handler(request, gateway, trace)
        except HanseError as error:
            trace.error = error.error.code
            response = error_response(error, trace.request_id, render_error)
        except ClientDisconnect:  # it left (or its body timed out): nobody reads an answer
            response = Response(status_code=CLIENT_CLOSED)
        except Exception:
            log.exception("unexpected failure", extra={"request_id": trace.request_id})
            response = error_response(HanseError(INTERNAL), trace.request_id, render_error)
        response.headers["X-Request-ID"] = trace.request_id
        for name, value in trace.headers.items():
            response.headers[name] = value
        if template in INFERENCE_PATHS:  # errors too: 0 when it failed before any route was tried
            response.headers.setdefault(ATTEMPTS_HEADER, str(trace.attempts))
        elapsed_s = time.perf_counter() - trace.started
        overhead_s = elapsed_s - trace.provider_s
        response.headers["X-Hanse-Overhead-Ms"] = f"{overhead_s * 1000:.3f}"
        gateway.metrics.request(
            template,
            trace.catalog_model or "",
            trace.route or "",
            str(response.status_code),
            elapsed_s,
            overhead_s,
        )
        access_log.write(
            {
                "msg": "request",
                "request_id": trace.request_id,
                "method": request.method,
                "path": request.scope["path"],
                "status": response.status_code,
                "account": trace.account,
                "account_id": trace.account_id,
                "key_id": trace.key_id,
                "model": trace.model,
                "route": trace.route,
                "attempts": trace.attempts,
                "latency_ms": round(elapsed_s * 1000, 2),
                "overhead_ms": round(overhead_s * 1000, 3),
            }
        )
        tracing: Tracing | None = request.app.state.tracing
        if tracing is not None:
            operation = "chat" if template in INFERENCE_PATHS else None
            span = functools.partial(
                tracing.record,
                trace,
                request.method,
                template,
                response.status_code,
                request.headers,
                operation,
            )
            if isinstance(response, StreamingResponse):  # its span ends with its stream
                response.body_iterator = _then(response.body_iterator, span)
            else:
                span()
        return response

    return run


async def _then(body: AsyncIterable[Any], done: Callable[[], None]) -> AsyncIterator[Any]:
    """`body`, then `done()` however it ends (`body` closed first, as its reader would)."""
    try:
        async for chunk in body:
            yield chunk
    finally:
        close = getattr(body, "aclose", None)
        if close is not None:
            await close()
        done()


def _route(
    template: str, handler: Handler, method: str, render_error: ErrorBody = openai_error_body
) -> Route:
    return Route(template, endpoint(handler, template, render_error), methods=[method])


def _new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


async def list_models(request: Request, gateway: Gateway, trace: Trace) -> Response:
    require_scope(await authenticate(gateway, request.headers, trace), SCOPE_MODELS)
    return JSONResponse(model_list(gateway.catalog, _include_meta(request)))


async def get_model(request: Request, gateway: Gateway, trace: Trace) -> Response:
    require_scope(await authenticate(gateway, request.headers, trace), SCOPE_MODELS)
    model_id = request.path_params["model_id"]
    model = gateway.catalog.model(model_id)
    if model is None:
        raise HanseError(
            UNKNOWN_MODEL, f"The model `{model_id}` does not exist.", details={"model": model_id}
        )
    return JSONResponse(model_object(model, _include_meta(request)))


def _json(handler: Callable[[Request, Gateway], Awaitable[Any]], status: int = 200) -> Handler:
    async def run(request: Request, gateway: Gateway, trace: Trace) -> Response:
        return JSONResponse(await handler(request, gateway), status_code=status)

    return run


def _traced_json(handler: vault.VaultHandler, status: int) -> Handler:
    async def run(request: Request, gateway: Gateway, trace: Trace) -> Response:
        return JSONResponse(await handler(request, gateway, trace), status_code=status)

    return run


async def usage(request: Request, gateway: Gateway, trace: Trace) -> Response:
    """The calling key's account: totals and per-model rows over [start, end)."""
    principal = await authenticate(gateway, request.headers, trace)
    account = await gateway.accounts.get_by_id(principal.account_id)
    assert account is not None, "a live key always has its account"
    query = request.query_params
    start = parse_time(query.get("start"), "start", EPOCH)
    end = parse_time(query.get("end"), "end", datetime.now(UTC) + timedelta(seconds=1))
    report = await usage_report(gateway.ledger, account, start, end, query.get("model") or None)
    return JSONResponse(report)


async def metrics(request: Request, gateway: Gateway, trace: Trace) -> Response:
    """Prometheus exposition of this process's counters."""
    body = gateway.metrics.render(await gateway.router.circuit_states())
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def health(request: Request, gateway: Gateway, trace: Trace) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request, gateway: Gateway, trace: Trace) -> Response:
    """Readiness: the database and Redis (when configured) answer, the providers have started."""
    checks = await gateway.readiness()
    if any(value != "ok" for value in checks.values()):
        raise HanseError(NOT_READY, details={"checks": checks})
    return JSONResponse({"status": "ready", "checks": checks})


async def openapi(request: Request, gateway: Gateway, trace: Trace) -> Response:
    return JSONResponse(openapi_document(gateway.catalog))


def _include_meta(request: Request) -> bool:
    value = request.query_params.get("include_meta", "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise HanseError(
            INVALID_VALUE,
            "`include_meta` must be true or false.",
            param="include_meta",
            details={"parameter": "include_meta"},
        )
    return value in ("true", "1")


async def _http_exception(request: Request, exc: Exception) -> Response:
    """A path or method no route serves: one bounded metrics label for all of them."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    error = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED}.get(status, INTERNAL)
    gateway: Gateway = request.app.state.gateway
    gateway.metrics.requests.labels(UNMATCHED, "", "", str(error.status)).inc()
    return error_response(HanseError(error), _new_request_id())


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The ASGI app; the catalog is loaded (and checked) before anything starts."""
    settings = settings or Settings()
    logs.configure(settings.log_level)
    gateway = Gateway(settings, load_catalog(settings.config))
    tracing = Tracing(settings.traces_endpoint) if settings.traces_endpoint else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        if tracing is not None:
            await tracing.start()
        # What start-up built lives as long as the process: out of the collector's sight, a full
        # collection no longer walks it (they stalled the loop for tens of ms: docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        _announce(gateway)
        yield
        if tracing is not None:
            await tracing.close()
        await gateway.close()

    hot = {
        CHAT_PATH: endpoint(inference.chat, CHAT_PATH),
        MESSAGES_PATH: endpoint(inference.messages, MESSAGES_PATH, anthropic_error_body),
        RESPONSES_PATH: endpoint(inference.responses, RESPONSES_PATH),
    }
    app = Starlette(
        routes=[
            *(Route(path, run, methods=["POST"]) for path, run in hot.items()),
            _route(
                f"{MESSAGES_PATH}/count_tokens",
                inference.count_tokens,
                "POST",
                anthropic_error_body,
            ),
            _route(f"{RESPONSES_PATH}/{{response_id}}", inference.get_response, "GET"),
            _route(f"{RESPONSES_PATH}/{{response_id}}", inference.delete_response, "DELETE"),
            _route(f"{RESPONSES_PATH}/{{response_id}}/input_items", inference.input_items, "GET"),
            _route("/v1/models", list_models, "GET"),
            _route("/v1/models/{model_id:path}", get_model, "GET"),
            _route("/health", health, "GET"),
            _route("/ready", ready, "GET"),
            _route("/metrics", metrics, "GET"),
            _route("/openapi.json", openapi, "GET"),
            _route("/admin/keys", _json(admin.create_key, 201), "POST"),
            _route("/admin/keys", _json(admin.list_keys), "GET"),
            _route("/admin/keys/{key_id}", _json(admin.revoke_key), "DELETE"),
            _route("/admin/accounts", _json(admin.create_account, 201), "POST"),
            _route("/admin/accounts/{name}", _json(admin.get_account), "GET"),
            _route("/admin/accounts/{name}", _json(admin.patch_account), "PATCH"),
            _route("/admin/accounts/{name}/topup", _json(admin.top_up), "POST"),
            _route("/v1/usage", usage, "GET"),
            *(
                _route(path, _traced_json(handler, status), method)
                for path, method, handler, status in vault.ROUTES
            ),
        ],
        exception_handlers={HTTPException: _http_exception},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.tracing = tracing
    limited = BodyLimit(HotPaths(app, hot), max_bytes=gateway.catalog.limits.max_body_bytes)
    return TrailingSlash(limited)


def _announce(gateway: Gateway) -> None:
    bind = gateway.settings.public_url
    models = ", ".join(m.id for m in gateway.catalog.models)
    example = gateway.catalog.models[0].id
    print(
        f"Hanse ready on {bind}/v1 (models: {models})\n"
        f"  create a key:  KEY=$(.venv/bin/hanse keys create --account demo)\n"
        f'  then:          curl {bind}/v1/chat/completions -H "Authorization: Bearer $KEY" '
        f"-H 'Content-Type: application/json' "
        f'-d \'{{"model":"{example}","messages":[{{"role":"user","content":"Hi"}}]}}\'',
        file=sys.stderr,
        flush=True,
    )
