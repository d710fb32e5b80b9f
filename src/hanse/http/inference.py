"""The inference endpoints, one per face: each reads its body with the face's parser, runs the one
pipeline (hanse.pipeline.infer) and renders the neutral answer with the face's renderer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from hanse.errors import MISSING_FIELD, HanseError
from hanse.faces.chat.render import chat_body, chat_sse
from hanse.faces.messages.convert import to_chat_request
from hanse.faces.messages.render import MessageStream, message_body, message_id
from hanse.faces.messages.wire import parse_count_request, parse_messages_request
from hanse.gateway import Gateway
from hanse.http.responses import JSONResponse
from hanse.pipeline import Trace, count_input_tokens, infer
from hanse.wire.request import ChatCompletionRequest, parse_chat_request


async def chat(request: Request, gateway: Gateway, trace: Trace) -> Response:
    """`POST /v1/chat/completions`."""
    body = await request.body()
    async with cancelled_on_disconnect(request):
        answer = await infer(
            gateway, request.headers, lambda: parse_chat_request(body), len(body), trace
        )
    if answer.events is not None:
        return event_stream(chat_sse(answer), answer.headers, trace)
    return JSONResponse(chat_body(answer), headers=answer.headers)


async def messages(request: Request, gateway: Gateway, trace: Trace) -> Response:
    """`POST /v1/messages` (Anthropic Messages)."""
    body = await request.body()

    def parse() -> ChatCompletionRequest:
        _require_version(request.headers)
        wire = parse_messages_request(body)
        return to_chat_request(wire, gateway.catalog.messages.catalog_model(wire.model))

    async with cancelled_on_disconnect(request):
        answer = await infer(gateway, request.headers, parse, len(body), trace)
    id = message_id()
    if answer.events is not None:
        stream = MessageStream(answer, id, trace.request_id).events()
        return event_stream(stream, answer.headers, trace)
    return JSONResponse(message_body(answer, id), headers=answer.headers)


async def count_tokens(request: Request, gateway: Gateway, trace: Trace) -> Response:
    """`POST /v1/messages/count_tokens`: free, no metering fields."""
    body = await request.body()

    def parse() -> ChatCompletionRequest:
        _require_version(request.headers)
        wire = parse_count_request(body)
        return to_chat_request(wire, gateway.catalog.messages.catalog_model(wire.model))

    tokens = await count_input_tokens(gateway, request.headers, parse, len(body), trace)
    return JSONResponse({"input_tokens": tokens})


def _require_version(headers: Mapping[str, str]) -> None:
    """Anthropic's API refuses a request without `anthropic-version`; any version is served."""
    if not headers.get("anthropic-version", "").strip():
        raise HanseError(
            MISSING_FIELD,
            "The `anthropic-version` header is required (for example `2023-06-01`).",
            param="anthropic-version",
            details={"parameter": "anthropic-version"},
        )


def event_stream(events: AsyncIterator[bytes], headers: dict[str, str], trace: Trace) -> Response:
    """An SSE answer, with the headers every stream carries."""
    headers = {**headers, "Cache-Control": "no-cache", "X-Request-ID": trace.request_id}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


@contextlib.asynccontextmanager
async def cancelled_on_disconnect(request: Request) -> AsyncIterator[None]:
    """Cancels the enclosed work when the client goes away (Starlette does not, and a generation
    would run on until its timeout), as ClientDisconnect. The work stays in the handler's own
    task, so the context variables the pipeline sets (the request id) stay with it."""
    handler = asyncio.current_task()
    assert handler is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        handler.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        yield
    except asyncio.CancelledError:
        if not gone:
            raise
        handler.uncancel()
        raise ClientDisconnect() from None
    finally:
        watcher.cancel()
