"""Structured output on routes that cannot enforce `response_format` themselves.

Melious's fallback: the schema goes into the system prompt, the answer is validated (jsonschema), and
an answer that fails is repaired once: one more call that shows the model its answer and the
validation error. An answer that still fails is INFERENCE_3209. Routes that enforce the format
natively (a grammar, an upstream's own json_schema) are always ranked first; the response's
`X-Hanse-Structured-Output` header says which way was taken. A native route's answer is held to
the same check (`native_problem`): a grammar cannot express every keyword.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncGenerator
from typing import Any, Literal

from hanse.config.schema import ModelConfig, RouteConfig
from hanse.domain import (
    Choice,
    ChoiceDelta,
    Completion,
    InferenceRequest,
    ResponseFormat,
    StreamEvent,
    ToolCallDelta,
    Usage,
)
from hanse.errors import SCHEMA_NOT_MET, HanseError
from hanse.providers.base import Provider
from hanse.providers.collect import collect_stream
from hanse.schema_validation import problem as schema_problem
from hanse.tokens import estimate_text_tokens

Mode = Literal["native", "fallback"]
HEADER = "X-Hanse-Structured-Output"
# The repair message and the format instructions, in tokens, beyond the schema itself.
REPAIR_OVERHEAD_TOKENS = 128
_PROBLEM_CHARS = 300
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(.*?)\n?```$", re.DOTALL)


def mode(model: ModelConfig, route: RouteConfig, request: InferenceRequest) -> Mode | None:
    """How the route serves the request's `response_format` (None: plain text was asked)."""
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    return "native" if _native(model, route, fmt.type) else "fallback"


def _native(model: ModelConfig, route: RouteConfig, kind: str) -> bool:
    name = "json_schema" if kind == "json_schema" else "structured_output"
    return bool(getattr(model.capabilities, name)) and name not in route.unsupported


def extra_input_tokens(request: InferenceRequest, input_tokens: int, per_choice: int) -> int:
    """The most input tokens the fallback adds: the schema on the first call, then one repair per
    choice, each with the prompt, the schema, the failed answer and the error."""
    fmt = request.response_format
    schema = json.dumps(fmt.schema, ensure_ascii=False) if fmt and fmt.schema else ""
    schema_tokens = estimate_text_tokens(schema)
    first = schema_tokens + REPAIR_OVERHEAD_TOKENS
    return first + request.n * (input_tokens + per_choice + first)


def _add_usage(total: Usage, more: Usage) -> None:
    """`more` added into `total`; missing usage on either call makes the sum missing (the meter
    then counts what was delivered rather than charge a partial figure)."""
    total.prompt_tokens += more.prompt_tokens
    total.completion_tokens += more.completion_tokens
    total.cached_prompt_tokens += more.cached_prompt_tokens
    total.reasoning_tokens += more.reasoning_tokens
    if more.source == "missing":
        total.source = "missing"


async def complete(
    provider: Provider, model: ModelConfig, request: InferenceRequest, route: RouteConfig
) -> Completion:
    """The route's answer, with the schema in the prompt, validated and repaired once if needed."""
    fmt = request.response_format
    assert fmt is not None
    asked = _prompted(request, fmt, json_mode=_native(model, route, "json_object"))
    first = await provider.complete(asked, route)
    usage = dataclasses.replace(first.usage)  # every field kept: cached, reasoning, source
    choices = []
    for choice in first.choices:
        if choice.tool_calls:  # a tool call is a valid answer when tools were offered
            choices.append(choice)
            continue
        text, problem = check(choice.content, fmt)
        if problem is not None:
            repaired = await provider.complete(repair(asked, choice.content, problem), route)
            _add_usage(usage, repaired.usage)
            answer = repaired.choices[0] if repaired.choices else choice
            text, problem = check(answer.content, fmt)
            if problem is not None:
                raise HanseError(
                    SCHEMA_NOT_MET,
                    f"The model's answer did not match the response_format, even after a "
                    f"repair: {problem}",
                    details={"route": route.id, "problem": problem},
                )
            choice = dataclasses.replace(answer, index=choice.index)
        choices.append(dataclasses.replace(choice, content=text))
    return Completion(choices, usage, first.system_fingerprint)


async def stream(
    provider: Provider, model: ModelConfig, request: InferenceRequest, route: RouteConfig
) -> AsyncGenerator[StreamEvent, None]:
    """The validated answer as stream events: it can only be sent once it has been checked."""
    completion = await complete(provider, model, request, route)
    for choice in completion.choices:
        calls = [
            ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments)
            for i, c in enumerate(choice.tool_calls)
        ]
        yield ChoiceDelta(
            index=choice.index,
            content=choice.content,
            tool_calls=calls or None,
            logprobs=choice.logprobs,
            system_fingerprint=completion.system_fingerprint,
        )
        yield ChoiceDelta(index=choice.index, finish_reason=choice.finish_reason)
    yield completion.usage


async def verified(
    provider: Provider, request: InferenceRequest, route: RouteConfig, completion: Completion
) -> Completion:
    """A native route's answer, held to what it claims: a choice that misses the schema is asked
    once more (shown its answer and the problem, as the fallback's repair), and one that still
    misses is INFERENCE_3209. What a route enforces is checked after generation everywhere."""
    for position, choice in enumerate(completion.choices):
        problem = native_problem(request, choice, forced_tool=False)
        if problem is None:
            continue
        again = await provider.complete(repair(request, choice.content, problem), route)
        _add_usage(completion.usage, again.usage)
        redone = again.choices[0] if again.choices else choice
        problem = native_problem(request, redone, forced_tool=False)
        if problem is not None:
            raise HanseError(
                SCHEMA_NOT_MET,
                "The route's native structured output did not match the response_format, even "
                f"after a second try: {problem}",
                details={"route": route.id, "problem": problem},
            )
        completion.choices[position] = dataclasses.replace(redone, index=choice.index)
    return completion


async def checked_stream(
    events: AsyncGenerator[StreamEvent, None], request: InferenceRequest, *, forced_tool: bool
) -> AsyncGenerator[StreamEvent, None]:
    """A native stream as it comes, each choice held to what the route enforces once it ends: one
    that misses ends the stream with INFERENCE_3209 instead of its finishing chunk (its text is
    already out, so no second try is possible)."""
    seen: dict[int, list[ChoiceDelta]] = {}
    try:
        async for event in events:
            if isinstance(event, ChoiceDelta):
                seen.setdefault(event.index, []).append(event)
                if event.finish_reason is not None:
                    whole = await collect_stream(_as_first(seen.pop(event.index)))
                    problem = native_problem(request, whole.choices[0], forced_tool=forced_tool)
                    if problem is not None:
                        raise HanseError(
                            SCHEMA_NOT_MET,
                            "The streamed answer did not match what was enforced, in a stream, "
                            f"where no second try is possible: {problem}",
                            details={"problem": problem},
                        )
            yield event
    finally:
        await events.aclose()


async def _as_first(deltas: list[ChoiceDelta]) -> AsyncGenerator[StreamEvent, None]:
    for delta in deltas:
        yield dataclasses.replace(delta, index=0)


def check(content: str | None, fmt: ResponseFormat) -> tuple[str | None, str | None]:
    """The answer's JSON text (code fences removed) and what is wrong with it (None: valid)."""
    if content is None:
        return None, "the answer is empty"
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except ValueError as exc:
        return content, f"the answer is not valid JSON ({exc})"
    if fmt.type == "json_object" or fmt.schema is None:
        return text, None if isinstance(value, dict) else "the answer is not a JSON object"
    found = schema_problem(fmt.schema, value)
    # jsonschema quotes the offending value, which may be most of the answer.
    return text, None if found is None else found[:_PROBLEM_CHARS]


def native_problem(request: InferenceRequest, choice: Choice, *, forced_tool: bool) -> str | None:
    """What is wrong with a choice a route claims to have enforced (None: valid).

    Under a forced tool call, every call's arguments must match its function's `parameters`;
    otherwise the content must match `response_format`. A choice cut by `length` cannot be whole
    JSON and is not checked (OpenAI returns it as it is, too)."""
    if choice.finish_reason == "length":
        return None
    if forced_tool:
        if not choice.tool_calls:
            return "the answer is not a tool call"
        for call in choice.tool_calls:
            found = arguments_problem(request, call.name, call.arguments)
            if found is not None:
                return found
        return None
    fmt = request.response_format
    if fmt is None or fmt.type == "text" or choice.tool_calls:
        return None
    return check(choice.content, fmt)[1]


def arguments_problem(request: InferenceRequest, name: str, arguments: str) -> str | None:
    """What is wrong with a call's `arguments` against its function's `parameters` (None: valid)."""
    try:
        value = json.loads(arguments)
    except ValueError as exc:
        return f"the arguments of `{name}` are not valid JSON ({exc})"
    for tool in request.tools:
        function = tool.get("function") or {}  # a custom tool has none: its input is free-form
        if function.get("name") == name:
            found = schema_problem(function.get("parameters") or {"type": "object"}, value)
            return None if found is None else f"`{name}` {found}"[:_PROBLEM_CHARS]
    return f"`{name}` is not one of the offered functions"


def instructions(fmt: ResponseFormat) -> str:
    """What the system prompt gains on a fallback route."""
    if fmt.type == "json_object" or fmt.schema is None:
        return "Answer with one JSON object only: no prose, no code fences."
    schema = json.dumps(fmt.schema, ensure_ascii=False)
    return (
        "Answer with one JSON value only: no prose, no code fences. "
        f"It must validate against this JSON Schema:\n{schema}"
    )


def _prompted(
    request: InferenceRequest, fmt: ResponseFormat, *, json_mode: bool
) -> InferenceRequest:
    messages = [dict(m) for m in request.messages]
    text = instructions(fmt)
    head = messages[0] if messages else {}
    if head.get("role") in ("system", "developer") and isinstance(head.get("content"), str):
        head["content"] = f"{head['content']}\n\n{text}"
    else:
        messages.insert(0, {"role": "system", "content": text})
    return dataclasses.replace(
        request,
        messages=messages,
        # A route with a JSON mode but no schema support still gets its JSON mode.
        response_format=ResponseFormat("json_object") if json_mode else None,
        stream=False,
        include_usage=False,
    )


def repair(asked: InferenceRequest, answer: str | None, problem: str) -> InferenceRequest:
    """`asked` once more, with the failed answer and what is wrong with it; one choice."""
    messages: list[dict[str, Any]] = [
        *asked.messages,
        {"role": "assistant", "content": answer or ""},
        {
            "role": "user",
            "content": f"Your answer does not have the required format: {problem}. "
            "Reply again with only the corrected JSON.",
        },
    ]
    return dataclasses.replace(asked, messages=messages, n=1)
