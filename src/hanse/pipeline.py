"""THE flow of an inference request, top to bottom, whichever face it came through. Each step
lives in its own module; a face (hanse.faces) parses its wire format into the Melious chat request
before this and renders the neutral `Answer` (hanse.answer) after it.

authenticate -> rate limits -> parse (the face's) + validate (limits) -> blueprint (compose, input railguards;
  a block or an override answers here, once the request is known valid) -> resolve model (flavor, preset)
  -> capability checks -> prepare content (fetch and re-encode images) -> context check
  -> route plan (filter, rank)
  -> reserve -> call the plan's routes (fail over; structured-output fallback where not native)
  -> output railguards -> settle (ledger): a whole completion, or metered stream events
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping

from hanse import logs, structured
from hanse.answer import Answer
from hanse.auth import SCOPE_CHAT, Principal, key_from_headers, require_scope
from hanse.blueprints.compose import DirectAnswer, apply_blueprint
from hanse.capabilities import check_capabilities, check_context, fit_max_tokens
from hanse.config.schema import ModelConfig
from hanse.direct import PROVIDER_ID, direct_completion, direct_events, settle_direct
from hanse.domain import InferenceRequest
from hanse.errors import AUTH_INVALID_KEY, HanseError
from hanse.gateway import Gateway
from hanse.limits import check_limits
from hanse.metering import Meter
from hanse.resolve import ResolvedModel, resolve_model
from hanse.routing import Served
from hanse.streaming import metered_events, metered_fields
from hanse.tokens import completion_texts
from hanse.trace import Trace
from hanse.vision.content import image_parts
from hanse.wire.convert import require_model, to_inference_request, to_provider_preferences
from hanse.wire.request import ChatCompletionRequest

# Bodies up to this size are tokenised on the event loop (well under a millisecond); larger ones in a
# thread, so that a huge prompt does not hold up everyone else's requests.
_COUNT_ON_LOOP_BYTES = 64 * 1024


# A face's parser: the request body read into the Melious chat request (its own errors raised);
# async, as a face may load what the request refers to (a stored response).
Parse = Callable[[], Awaitable[ChatCompletionRequest]]


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


async def infer(
    gateway: Gateway,
    headers: Mapping[str, str],
    parse: Parse,
    body_size: int,
    trace: Trace,
    *,
    fit_max_tokens: bool = False,
) -> Answer:
    """Serve one inference request: `parse` reads the face's body (once the key is known good),
    `body_size` is its size in bytes (a large one is counted off the event loop);
    `fit_max_tokens`: a `max_tokens` beyond the room the input leaves is lowered to it, not
    refused (the face's API allows that)."""
    principal = await authenticate(gateway, headers, trace)
    require_scope(principal, SCOPE_CHAT)
    gateway.in_flight.enter(principal.account_id)  # counted until the answer (or stream) ends
    try:
        wire = await parse()
        answer = await _serve(gateway, principal, headers, wire, body_size, trace, fit_max_tokens)
    except BaseException:
        gateway.in_flight.leave(principal.account_id)
        raise
    if answer.events is None:
        gateway.in_flight.leave(principal.account_id)
    else:
        answer.events = gateway.in_flight.held(principal.account_id, answer.events)
    return answer


async def count_input_tokens(
    gateway: Gateway, headers: Mapping[str, str], parse: Parse, body_size: int, trace: Trace
) -> int:
    """The prompt tokens the request would be planned with (its images included): authenticated
    and rate-limited as any request, nothing reserved or charged."""
    principal = await authenticate(gateway, headers, trace)
    require_scope(principal, SCOPE_CHAT)
    wire = await parse()
    check_limits(wire, gateway.catalog.limits)
    trace.model = wire.model
    resolved = resolve_model(gateway.catalog, require_model(wire), wire.preset)
    trace.catalog_model = resolved.model.id
    request = to_inference_request(wire, resolved.model.id)
    await gateway.images.prepare(request)
    return await _input_tokens(gateway, resolved.model, request, body_size)


async def _input_tokens(
    gateway: Gateway, model: ModelConfig, request: InferenceRequest, body_size: int
) -> int:
    """The prompt's tokens; tokenising megabytes takes seconds, so a large body is counted off
    the event loop."""
    if body_size > _COUNT_ON_LOOP_BYTES:
        return await asyncio.to_thread(gateway.router.input_tokens, model, request)
    return gateway.router.input_tokens(model, request)


async def _serve(
    gateway: Gateway,
    principal: Principal,
    headers: Mapping[str, str],
    wire: ChatCompletionRequest,
    body_size: int,
    trace: Trace,
    fit: bool,
) -> Answer:
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
    if body_size > _COUNT_ON_LOOP_BYTES or image_parts(request.messages):
        await gateway.billing.require_funds(principal, resolved.model.routes)
    await gateway.images.prepare(request)  # fetch and re-encode images (the safe fetcher)
    input_tokens = await _input_tokens(gateway, resolved.model, request, body_size)
    if fit:
        fit_max_tokens(resolved.model, request, input_tokens)
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
    answer = Answer(request, model, input_tokens)
    if request.stream:
        waited = time.perf_counter()
        try:
            first, events, served = await gateway.router.stream(plan, request)
        except BaseException:
            await meter.fail()
            raise
        _record(trace, served, waited)
        first, events = composed.output.stream(first, events, input_tokens)
        answer.events = metered_events(first, events, served, meter, trace)
        answer.headers = _headers(served)
        return answer

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
    trace.usage = completion.usage
    trace.finish_reasons = [choice.finish_reason for choice in completion.choices]
    answer.completion, answer.metered = completion, metered_fields(impact, charge)
    answer.headers = _headers(served)
    return answer


async def _answer_directly(
    gateway: Gateway,
    principal: Principal,
    answer: DirectAnswer,
    request: InferenceRequest,
    resolved: ResolvedModel,
    trace: Trace,
) -> Answer:
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
    headers = {"X-Hanse-Provider": PROVIDER_ID, "X-Hanse-Attempts": "0"}
    trace.route = PROVIDER_ID
    # Not the deprecated-functions shape: the answer has no call to carry.
    served = dataclasses.replace(request, legacy_functions=False)
    out = Answer(served, trace.model, 0, headers=headers)
    if request.stream:
        out.events = direct_events(answer, request.n, metered)
    else:
        out.completion, out.metered = direct_completion(answer, request.n), metered
    return out


def _record(trace: Trace, served: Served, waited_since: float) -> None:
    trace.route, trace.attempts = served.route.id, served.attempts
    trace.provider_s = time.perf_counter() - waited_since


def _headers(served: Served) -> dict[str, str]:
    headers = {"X-Hanse-Provider": served.route.id, "X-Hanse-Attempts": str(served.attempts)}
    if served.structured_output is not None:
        headers[structured.HEADER] = served.structured_output
    return headers
