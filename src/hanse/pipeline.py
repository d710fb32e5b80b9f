"""THE flow of a chat completion, top to bottom. Each step lives in its own module.

authenticate -> rate limits -> parse + validate (limits) -> blueprint (compose, input railguards;
  a block or an override answers here, once the request is known valid) -> resolve model (flavor, preset)
  -> capability checks -> prepare content (fetch and re-encode images) -> context check
  -> route plan (filter, rank)
  -> reserve -> call the plan's routes (fail over; structured-output fallback where not native)
  -> JSON answer, or SSE stream
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from hanse import logs, structured
from hanse.auth import SCOPE_CHAT, Principal, key_from_headers, require_scope
from hanse.blueprints.compose import DirectAnswer, apply_blueprint
from hanse.capabilities import check_capabilities, check_context
from hanse.direct import PROVIDER_ID, direct_body, direct_stream, settle_direct
from hanse.domain import InferenceRequest
from hanse.errors import AUTH_INVALID_KEY, HanseError
from hanse.gateway import Gateway
from hanse.limits import check_limits
from hanse.metering import Meter
from hanse.resolve import ResolvedModel, resolve_model
from hanse.routing import Served
from hanse.streaming import metered_fields, sse_stream
from hanse.tokens import completion_texts
from hanse.vision.content import image_parts
from hanse.wire.convert import require_model, to_inference_request, to_provider_preferences
from hanse.wire.request import parse_chat_request
from hanse.wire.response import ChunkWriter, completion_body

# Bodies up to this size are tokenised on the event loop (well under a millisecond); larger ones in a
# thread, so that a huge prompt does not hold up everyone else's requests.
_COUNT_ON_LOOP_BYTES = 64 * 1024


@dataclass(slots=True)
class Trace:
    """What one request's log line and response headers report."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    account: str | None = None
    key_id: str | None = None
    model: str | None = None  # as the client named it
    catalog_model: str | None = None  # the catalog's id it resolved to
    route: str | None = None
    attempts: int = 0
    provider_s: float = 0.0  # spent waiting on providers (until the first event, for a stream)
    account_id: int | None = None
    headers: dict[str, str] = field(default_factory=dict)  # on every answer, errors too (limits)


@dataclass(slots=True)
class ChatAnswer:
    """Either a JSON body or an SSE byte stream, with the headers that go with it."""

    body: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


async def authenticate(gateway: Gateway, headers: Mapping[str, str], trace: Trace) -> Principal:
    """The caller behind the request's key (AUTH_1007 / AUTH_1008 otherwise), counted against
    its account's rate limits (AUTH_1028 when over one)."""
    principal = await gateway.keys.authenticate(key_from_headers(headers))
    if principal is None:
        raise HanseError(AUTH_INVALID_KEY)
    trace.account, trace.key_id = principal.account_name, principal.key_id
    trace.account_id = principal.account_id
    trace.headers.update(await gateway.rate_limits.admit(principal))
    return principal


async def chat_completions(
    gateway: Gateway, headers: Mapping[str, str], body: bytes, trace: Trace
) -> ChatAnswer:
    principal = await authenticate(gateway, headers, trace)
    require_scope(principal, SCOPE_CHAT)
    gateway.in_flight.enter(principal.account_id)  # counted until the answer (or stream) ends
    try:
        answer = await _serve(gateway, principal, headers, body, trace)
    except BaseException:
        gateway.in_flight.leave(principal.account_id)
        raise
    if answer.stream is None:
        gateway.in_flight.leave(principal.account_id)
    else:
        answer.stream = gateway.in_flight.held(principal.account_id, answer.stream)
    return answer


async def _serve(
    gateway: Gateway, principal: Principal, headers: Mapping[str, str], body: bytes, trace: Trace
) -> ChatAnswer:
    wire = parse_chat_request(body)
    check_limits(wire, gateway.catalog.limits)
    if wire.request_id:
        trace.request_id = wire.request_id
        logs.request_id.set(wire.request_id)
    composed = await apply_blueprint(gateway.vault, principal, headers, wire)
    wire = composed.wire
    trace.model = wire.model

    model = require_model(wire)
    resolved = resolve_model(gateway.catalog, model, wire.preset)
    trace.catalog_model = resolved.model.id
    request = to_inference_request(wire, resolved.model.id)
    if composed.answer is not None:  # an input railguard blocked it, or an override answered
        return await _answer_directly(gateway, principal, composed.answer, request, resolved, trace)
    check_capabilities(resolved.model, request)
    # Costly work ahead (fetching and decoding images, tokenising megabytes): can it pay at all?
    if len(body) > _COUNT_ON_LOOP_BYTES or image_parts(request.messages):
        await gateway.billing.require_funds(principal, resolved.model.routes)
    await gateway.images.prepare(request)  # fetch and re-encode images (the safe fetcher)
    if len(body) > _COUNT_ON_LOOP_BYTES:  # tokenising megabytes takes seconds: not on the loop
        input_tokens = await asyncio.to_thread(gateway.router.input_tokens, resolved.model, request)
    else:
        input_tokens = gateway.router.input_tokens(resolved.model, request)
    check_context(resolved.model, request, input_tokens)
    plan = gateway.router.plan(
        resolved.model,
        request,
        resolved.flavor,
        to_provider_preferences(wire),
        input_tokens,
        reasoning=resolved.reasoning,
    )

    meter = await Meter.open(
        gateway.metering,
        principal,
        resolved.model,
        request,
        plan.routes,
        input_tokens,
        trace.request_id,
        repairs=plan.may_repair(request),
    )
    response_id = "chatcmpl-" + secrets.token_urlsafe(18)
    created = int(time.time())
    if request.stream:
        waited = time.perf_counter()
        try:
            first, events, served = await gateway.router.stream(plan, request)
        except BaseException:
            await meter.fail()
            raise
        _record(trace, served, waited)
        first, events = composed.output.stream(first, events, input_tokens)
        writer = ChunkWriter(
            id=response_id,
            created=created,
            model=model,
            include_usage=request.include_usage,
            legacy_functions=request.legacy_functions,
        )
        stream = sse_stream(
            first, events, writer, request, served, meter, input_tokens, trace.request_id
        )
        return ChatAnswer(stream=stream, headers=_headers(served))

    waited = time.perf_counter()
    try:
        completion, served = await gateway.router.complete(plan, request)
    except BaseException:
        await meter.fail()
        raise
    _record(trace, served, waited)
    generated = completion_texts(completion)  # counted when the provider reported no usage
    completion, status = composed.output.complete(completion)
    impact, charge = await meter.close(status, served.route, completion.usage, generated)
    completion.usage = meter.usage or completion.usage
    body_out = completion_body(
        completion,
        id=response_id,
        created=created,
        model=model,
        legacy_functions=request.legacy_functions,
    )
    body_out.update(metered_fields(impact, charge))
    return ChatAnswer(body=body_out, headers=_headers(served))


async def _answer_directly(
    gateway: Gateway,
    principal: Principal,
    answer: DirectAnswer,
    request: InferenceRequest,
    resolved: ResolvedModel,
    trace: Trace,
) -> ChatAnswer:
    """A blueprint's answer: no provider call, zero cost, still a ledger row."""
    assert trace.model is not None
    metered = await settle_direct(
        gateway.billing,
        principal,
        answer,
        model=resolved.model.id,
        request_id=trace.request_id,
        location=gateway.settings.location,
    )
    response_id, created = "chatcmpl-" + secrets.token_urlsafe(18), int(time.time())
    headers = {"X-Hanse-Provider": PROVIDER_ID, "X-Hanse-Attempts": "0"}
    trace.route = PROVIDER_ID
    if request.stream:
        writer = ChunkWriter(
            id=response_id, created=created, model=trace.model, include_usage=request.include_usage
        )
        stream = direct_stream(answer, request.n, metered, writer, request.include_usage)
        return ChatAnswer(stream=stream, headers=headers)
    body = direct_body(
        answer, request.n, metered, id=response_id, created=created, model=trace.model
    )
    return ChatAnswer(body=body, headers=headers)


def _record(trace: Trace, served: Served, waited_since: float) -> None:
    trace.route, trace.attempts = served.route.id, served.attempts
    trace.provider_s = time.perf_counter() - waited_since


def _headers(served: Served) -> dict[str, str]:
    headers = {"X-Hanse-Provider": served.route.id, "X-Hanse-Attempts": str(served.attempts)}
    if served.structured_output is not None:
        headers[structured.HEADER] = served.structured_output
    return headers
