"""The inference endpoints, one per face: each reads its body with the face's parser, runs the one
pipeline (hanse.pipeline.infer) and renders the neutral answer with the face's renderer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from hanse.auth import SCOPE_CHAT, require_scope
from hanse.errors import MISSING_FIELD, NOT_FOUND, HanseError
from hanse.faces.chat.render import chat_body, chat_sse
from hanse.faces.messages.convert import to_chat_request
from hanse.faces.messages.render import MessageStream, message_body, message_id
from hanse.faces.messages.wire import (
    CountTokensRequest,
    MessagesRequest,
    parse_count_request,
    parse_messages_request,
)
from hanse.faces.responses import convert as responses_convert
from hanse.faces.responses.render import (
    Frame,
    ResponseStream,
    conversation_turn,
    input_item_body,
    response_body,
    response_id,
)
from hanse.faces.responses.wire import InputItem, ResponsesRequest, parse_responses_request
from hanse.gateway import Gateway
from hanse.http.responses import JSONResponse
from hanse.pipeline import Parse, authenticate, count_input_tokens, infer
from hanse.storage.responses import StoredResponse
from hanse.trace import Trace
from hanse.wire.request import ChatCompletionRequest, parse_chat_request


async def chat(request: Request, gateway: Gateway, trace: Trace) -> Response:
    """`POST /v1/chat/completions`."""
    body = await request.body()

    async def parse() -> ChatCompletionRequest:
        return parse_chat_request(body)

    async with cancelled_on_disconnect(request):
        answer = await infer(gateway, request.headers, parse, len(body), trace)
    if answer.events is not None:
        return event_stream(chat_sse(answer), answer.headers, trace)
    return JSONResponse(chat_body(answer), headers=answer.headers)


async def messages(request: Request, gateway: Gateway, trace: Trace) -> Response:
    """`POST /v1/messages` (Anthropic Messages)."""
    body = await request.body()
    parse = _anthropic_parser(request, gateway, lambda: parse_messages_request(body))
    async with cancelled_on_disconnect(request):
        answer = await infer(gateway, request.headers, parse, len(body), trace, fit_max_tokens=True)
    id = message_id()
    if answer.events is not None:
        stream = MessageStream(answer, id, trace.request_id).events()
        return event_stream(stream, answer.headers, trace)
    return JSONResponse(message_body(answer, id), headers=answer.headers)


async def count_tokens(request: Request, gateway: Gateway, trace: Trace) -> Response:
    """`POST /v1/messages/count_tokens`: free, no metering fields."""
    body = await request.body()
    parse = _anthropic_parser(request, gateway, lambda: parse_count_request(body))
    tokens = await count_input_tokens(gateway, request.headers, parse, len(body), trace)
    return JSONResponse({"input_tokens": tokens})


async def responses(request: Request, gateway: Gateway, trace: Trace) -> Response:
    """`POST /v1/responses` (OpenAI Responses): stored per account unless `store: false`."""
    body = await request.body()
    parsed: list[Turn] = []

    async def parse() -> ChatCompletionRequest:
        wire, items, tools = parse_responses_request(body)
        earlier = await _previous(gateway, trace, wire.previous_response_id)
        conversation = earlier + responses_convert.chat_messages(items)
        parsed.append(
            Turn(wire, items, conversation, [t.model_dump(exclude_none=True) for t in tools])
        )
        return responses_convert.to_chat_request(wire, conversation, tools, wire.model)

    async with cancelled_on_disconnect(request):
        answer = await infer(gateway, request.headers, parse, len(body), trace)
    [turn] = parsed
    frame = Frame(response_id(), answer.model, turn.request, turn.tools)

    async def store(response: dict[str, Any]) -> None:
        if turn.request.store is not False and trace.account_id is not None:
            conversation = turn.conversation + conversation_turn(response)
            items = [input_item_body(item) for item in turn.items]
            stored = StoredResponse(response["id"], response, items, conversation)
            await gateway.responses.put(trace.account_id, stored)

    if answer.events is not None:
        stream = ResponseStream(answer, frame, store).events()
        return event_stream(stream, answer.headers, trace)
    out = response_body(answer, frame)
    await store(out)
    return JSONResponse(out, headers=answer.headers)


async def get_response(request: Request, gateway: Gateway, trace: Trace) -> Response:
    """`GET /v1/responses/{id}`."""
    stored = await _stored(gateway, request, trace)
    return JSONResponse(stored.body)


async def delete_response(request: Request, gateway: Gateway, trace: Trace) -> Response:
    """`DELETE /v1/responses/{id}`."""
    stored = await _stored(gateway, request, trace)
    assert trace.account_id is not None
    await gateway.responses.delete(trace.account_id, stored.id)
    return JSONResponse({"id": stored.id, "object": "response", "deleted": True})


async def input_items(request: Request, gateway: Gateway, trace: Trace) -> Response:
    """`GET /v1/responses/{id}/input_items`: the input the response was given, newest first
    unless `order=asc`."""
    stored = await _stored(gateway, request, trace)
    items = [
        {"id": item.get("id") or f"item_{stored.id[5:]}_{index}", **item}
        for index, item in enumerate(stored.input_items)
    ]
    if request.query_params.get("order", "desc") != "asc":
        items.reverse()
    return JSONResponse(
        {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": False,
        }
    )


@dataclass(frozen=True, slots=True)
class Turn:
    """What the Responses face keeps of a request to answer and store it."""

    request: ResponsesRequest
    items: list[InputItem]
    conversation: list[dict[str, Any]]
    tools: list[dict[str, Any]]


async def _previous(
    gateway: Gateway, trace: Trace, response_id: str | None
) -> list[dict[str, Any]]:
    """The stored conversation `previous_response_id` continues (the caller's own responses only)."""
    if response_id is None:
        return []
    assert trace.account_id is not None
    stored = await gateway.responses.get(trace.account_id, response_id)
    if stored is None:
        raise _no_response(response_id, "previous_response_id")
    return stored.conversation


async def _stored(gateway: Gateway, request: Request, trace: Trace) -> StoredResponse:
    principal = await authenticate(gateway, request.headers, trace)
    require_scope(principal, SCOPE_CHAT)
    response_id = request.path_params["response_id"]
    stored = await gateway.responses.get(principal.account_id, response_id)
    if stored is None:
        raise _no_response(response_id, None)
    return stored


def _no_response(response_id: str, param: str | None) -> HanseError:
    return HanseError(
        NOT_FOUND,
        f"No response with id `{response_id}` was found.",
        param=param,
        details={"response_id": response_id},
    )


def _anthropic_parser(
    request: Request,
    gateway: Gateway,
    read: Callable[[], MessagesRequest | CountTokensRequest],
) -> Parse:
    """The Messages face's parser: the version header, the body, Claude names to catalog models."""

    async def parse() -> ChatCompletionRequest:
        _require_version(request.headers)
        wire = read()
        return to_chat_request(wire, gateway.catalog.messages.catalog_model(wire.model))

    return parse


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
