"""A provider that forwards to any OpenAI-shaped upstream (vLLM, SGLang, llama.cpp server, OpenAI...).

What comes back is checked field by field: a malformed answer is the provider's failure (failed
over, counted by the breaker), never the gateway's. An upstream's error text stays in the log.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from hanse.config.schema import ModelConfig, ProviderConfig, RouteConfig
from hanse.domain import (
    Choice,
    ChoiceDelta,
    Completion,
    InferenceRequest,
    Logprobs,
    StreamEvent,
    ToolCall,
    ToolCallDelta,
    ToolKind,
    Usage,
)
from hanse.errors import CONTENT_FILTERED, CONTEXT_EXCEEDED, PROVIDER_REJECTED, HanseError
from hanse.providers.base import ProviderFailure

log = logging.getLogger("hanse.providers")

_OPTIONAL = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "user",
    "reasoning_effort",
    "parallel_tool_calls",
    "top_logprobs",
)
_FINISH = {"stop", "length", "tool_calls", "content_filter"}
# OpenAI's and Azure's codes for a refusal by the provider's safety filter.
_CONTENT_FILTER_CODES = {"content_filter", "content_policy_violation"}
# Error codes and types a client may see: names from OpenAI's, vLLM's and llama.cpp's catalogs,
# never free text (an upstream's message can hold its URL, a path, or a key it echoes).
_SAFE_CODES = frozenset(
    {
        "content_filter",
        "content_policy_violation",
        "context_length_exceeded",
        "invalid_value",
        "invalid_type",
        "invalid_request_error",
        "invalid_prompt",
        "missing_required_parameter",
        "unsupported_parameter",
        "unsupported_value",
        "unknown_parameter",
        "string_above_max_length",
        "array_above_max_length",
        "integer_above_max_value",
        "integer_below_min_value",
        "model_not_found",
        "invalid_image",
        "invalid_image_url",
        "image_parse_error",
        "tool_use_failed",
        "json_validate_failed",
    }
)
_SAFE_TYPES = frozenset(
    {
        "invalid_request_error",
        "not_found_error",
        "BadRequestError",
        "NotFoundError",
        "UnprocessableEntityError",
        "invalid_request",
        "validation_error",
    }
)
_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}(\[\d{1,4}\]|\.[A-Za-z_][A-Za-z0-9_]{0,40}){0,6}")
# What looks like a credential in an upstream's text, blanked before it is logged.
_SECRETS = (
    (re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"), r"\1[redacted]"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), "[redacted]"),
    (
        re.compile(r"(?i)((?:api[_-]?key|token|secret|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+"),
        r"\1[redacted]",
    ),
)
_LOGGED_CHARS = 500
# Bounds beyond which a provider's number is nonsense (a failure, never a credit or a long hold).
_MAX_TOKENS = 10**9
_MAX_TOOL_CALLS = 1024
_MAX_RETRY_AFTER_S = 3600.0
_SERVICE_TIERS = frozenset({"auto", "default", "flex", "scale", "priority", "fast"})


class OpenAICompatibleProvider:
    """Forwards requests over a pooled HTTP client; streams are relayed chunk by chunk."""

    def __init__(self, config: ProviderConfig) -> None:
        self.id = config.id
        self._config = config
        self._url = f"{(config.base_url or '').rstrip('/')}/chat/completions"
        self._session: aiohttp.ClientSession | None = None
        self._secret = ""

    async def start(self) -> None:
        headers = {"Content-Type": "application/json"}
        if self._config.api_key_env:
            secret = os.environ.get(self._config.api_key_env)
            if secret:
                self._secret = secret
                headers["Authorization"] = f"Bearer {secret}"
            else:
                log.warning(
                    "provider %s: environment variable %s is not set; calling without a key",
                    self.id,
                    self._config.api_key_env,
                )
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self._config.connect_timeout_s,
            sock_read=self._config.read_timeout_s,
        )
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=timeout,
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            # An upstream's cookies belong to no caller: none is kept or sent back (and none is
            # parsed, matched and stored on every answer).
            cookie_jar=aiohttp.DummyCookieJar(),
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def count_input_tokens(self, request: InferenceRequest, model: ModelConfig) -> int | None:
        return None

    async def complete(self, request: InferenceRequest, route: RouteConfig) -> Completion:
        body = self._body(request, route)
        async with self._post(body) as response:
            await self._raise_for_status(response)
            raw = await self._read(response)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _malformed("the body is not JSON") from exc
        return _completion(parsed, request.n)

    async def stream(
        self, request: InferenceRequest, route: RouteConfig
    ) -> AsyncGenerator[StreamEvent, None]:
        body = self._body(request, route)
        usage: Usage | None = None
        chunks = 0
        started: set[int] = set()
        finished: set[int] = set()
        async with self._post(body) as response:
            await self._raise_for_status(response)
            try:
                async for line in response.content:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    chunk = self._loads_chunk(data)
                    chunks += 1
                    if chunk.get("usage") is not None:
                        usage = _usage(chunk["usage"])
                    for delta in _deltas(chunk, request.n):
                        started.add(delta.index)
                        if delta.finish_reason:
                            finished.add(delta.index)
                        yield delta
                else:
                    if not chunks:
                        raise _malformed("the stream held no chunk")
                    # The body ended without [DONE]: a truncated answer unless every choice finished.
                    if not started or started - finished:
                        raise ProviderFailure("connect", "the provider ended the stream early")
            except TimeoutError as exc:  # first: aiohttp's read timeout is a connection error too
                raise ProviderFailure("timeout", "the provider stopped sending") from exc
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                raise ProviderFailure("connect", "the provider cut the stream") from exc
        # No usage at all: the gateway counts the tokens itself (the counts stay 0 until then).
        yield usage or Usage(source="missing")

    def _body(self, request: InferenceRequest, route: RouteConfig) -> dict[str, Any]:
        messages = request.messages
        if self._config.wire_form == "compatible":
            messages = [_compatible(message) for message in messages]
        body: dict[str, Any] = {
            "model": route.upstream_model or request.model,
            "messages": messages,
        }
        for name in _OPTIONAL:
            value = getattr(request, name)
            if value is not None:
                body[name] = value
        if request.logit_bias:
            body["logit_bias"] = {str(token): bias for token, bias in request.logit_bias.items()}
        if request.stop:
            body["stop"] = request.stop
        if request.n != 1:
            body["n"] = request.n
        if request.tools:
            body["tools"] = request.tools
        if request.tool_choice is not None:
            body["tool_choice"] = request.tool_choice
        if request.logprobs:
            body["logprobs"] = True
        if request.modalities is not None:
            body["modalities"] = request.modalities
        if request.audio is not None:
            body["audio"] = request.audio
        if request.response_format is not None:
            body["response_format"] = _response_format(request)
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    @asynccontextmanager
    async def _post(self, body: dict[str, Any]) -> AsyncIterator[aiohttp.ClientResponse]:
        if self._session is None:
            raise RuntimeError("provider not started")
        try:
            async with self._session.post(self._url, data=_encode(body)) as response:
                yield response
        except aiohttp.ClientConnectorError as exc:
            raise ProviderFailure("connect", "cannot connect to the provider") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise ProviderFailure("connect", "the provider closed the connection") from exc
        except TimeoutError as exc:
            raise ProviderFailure("timeout", "the provider did not answer in time") from exc

    async def _raise_for_status(self, response: aiohttp.ClientResponse) -> None:
        """Turn a non-2xx answer into a failure; the provider's own text only reaches the log."""
        status = response.status
        if 200 <= status < 300:
            return
        error = _upstream_error(await self._read(response))
        log.warning(
            "provider %s answered HTTP %s (code %s): %s",
            self.id,
            status,
            error.code,
            self._redact(error.text),
        )
        if status == 429:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise ProviderFailure(
                "rate_limited",
                "the provider is rate-limited",
                status=status,
                retry_after=retry_after,
            )
        if status in (401, 402, 403):  # the gateway's own key or account, not the client's request
            raise ProviderFailure(
                "auth", "the provider refused the gateway's credentials", status=status
            )
        if not 400 <= status < 500 or status in (404, 408):
            raise ProviderFailure("server", f"the provider answered {status}", status=status)
        details: dict[str, Any] = {"provider_status": status}
        for name in ("code", "type", "param"):
            value = getattr(error, name)
            if value is not None:
                details[f"provider_{name}"] = value
        if error.code in _CONTENT_FILTER_CODES:
            raise HanseError(CONTENT_FILTERED, details=details)
        if error.code == "context_length_exceeded":  # the gateway's own 3207, as clients match it
            raise HanseError(
                CONTEXT_EXCEEDED,
                "This model's maximum context length is smaller than this request, the provider"
                " says. Please reduce the length of the messages or completion."
                " (context_length_exceeded)",
                param="messages",
                details={**details, "openai_code": "context_length_exceeded"},
            )
        shown = f"HTTP {status}" + (f", {error.code}" if error.code else "")
        raise HanseError(
            PROVIDER_REJECTED,
            f"The provider rejected the request ({shown}).",
            details=details,
            param=error.param,
        )

    def _loads_chunk(self, data: bytes) -> dict[str, Any]:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise _malformed("a chunk is not JSON") from exc
        if not isinstance(chunk, dict):
            raise _malformed("a chunk is not an object")
        if "error" in chunk:
            error = _error_fields(chunk["error"])
            log.warning(
                "provider %s reported an error mid-stream (code %s): %s",
                self.id,
                error.code,
                self._redact(error.text),
            )
            raise ProviderFailure("server", "the provider reported an error mid-stream")
        return chunk

    def _redact(self, text: str) -> str:
        """An upstream's text fit for the log: one line, no key (ours or any that looks like one)."""
        if self._secret:
            text = text.replace(self._secret, "[redacted]")
        for pattern, replacement in _SECRETS:
            text = pattern.sub(replacement, text)
        return text.replace("\n", " ")[:_LOGGED_CHARS]

    @staticmethod
    async def _read(response: aiohttp.ClientResponse) -> bytes:
        try:
            return await response.read()
        except TimeoutError as exc:  # first: aiohttp's read timeout is a connection error too
            raise ProviderFailure("timeout", "the provider did not answer in time") from exc
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise ProviderFailure("connect", "the provider cut the connection") from exc


def _encode(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # an integer beyond 64 bits in a client's schema: the stdlib takes any size
        return json.dumps(body, ensure_ascii=False).encode()


def _response_format(request: InferenceRequest) -> dict[str, Any]:
    fmt = request.response_format
    assert fmt is not None
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    schema: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema or {}}
    if fmt.strict is not None:
        schema["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": schema}


def _compatible(message: dict[str, Any]) -> dict[str, Any]:
    """A message in the form every OpenAI-shaped server accepts (many predate `developer`, content
    part arrays, or a null `content` beside tool calls). Only an all-text part list is joined: one
    with images, audio or files keeps its parts."""
    out = dict(message)
    if out.get("role") == "developer":
        out["role"] = "system"
    content = out.get("content")
    if (
        isinstance(content, list)
        and content
        and all(isinstance(p, dict) and p.get("type") == "text" for p in content)
    ):
        # Joined as vLLM joins them.
        out["content"] = "\n".join(str(part.get("text") or "") for part in content)
    if out.get("role") == "assistant" and out.get("tool_calls") and out.get("content") is None:
        out["content"] = ""
    return out


# Upstream errors.


@dataclass(frozen=True, slots=True)
class _UpstreamError:
    """What an upstream error body says: fields from a known safe set, and its text (log only)."""

    code: str | None
    type: str | None
    param: str | None
    text: str


def _upstream_error(raw: bytes) -> _UpstreamError:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:  # an HTML page, a proxy's plain text...
        return _UpstreamError(None, None, None, raw[:_LOGGED_CHARS].decode("utf-8", "replace"))
    error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
    return _error_fields(error)


def _error_fields(error: Any) -> _UpstreamError:
    if not isinstance(error, dict):
        return _UpstreamError(None, None, None, str(error)[:_LOGGED_CHARS])
    code, type_, param = error.get("code"), error.get("type"), error.get("param")
    return _UpstreamError(
        code=code if code in _SAFE_CODES else None,
        type=type_ if type_ in _SAFE_TYPES else None,
        param=param if isinstance(param, str) and _PARAM.fullmatch(param) else None,
        text=str(error.get("message") or error.get("detail") or error)[:_LOGGED_CHARS],
    )


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait, from delta-seconds or an HTTP date, within bounds; None if it is neither."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            log.warning("ignoring an unreadable Retry-After %r", value[:40])
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - datetime.now(UTC)).total_seconds())
    if not math.isfinite(seconds) or seconds < 0:
        log.warning("ignoring an impossible Retry-After %r", value[:40])
        return None
    return min(seconds, _MAX_RETRY_AFTER_S)


# Answers: every field is checked, since a malformed answer is the provider's failure, not ours.


def _malformed(what: str) -> ProviderFailure:
    return ProviderFailure("malformed", f"the provider sent a malformed answer: {what}")


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _malformed(f"{what} is not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _malformed(f"{what} is not a list")
    return value


def _text(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _malformed(f"{what} is not a string")


def _index(value: Any, bound: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < bound:
        raise _malformed(f"{what} {str(value)[:20]} is out of range")
    return value


def _count(raw: dict[str, Any], name: str) -> int:
    value = raw.get(name)
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TOKENS:
        raise _malformed(f"usage {name} is not a plausible count")
    return value


def _usage(raw: Any) -> Usage:
    """The provider's counts; `missing` when it sent none (never a negative or absurd count)."""
    usage = _object(raw, "usage")
    if usage.get("prompt_tokens") is None and usage.get("completion_tokens") is None:
        return Usage(source="missing")
    prompt, completion = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
    prompt_details = _object(usage.get("prompt_tokens_details"), "prompt_tokens_details")
    completion_details = _object(usage.get("completion_tokens_details"), "completion_details")
    return Usage(
        prompt,
        completion,
        cached_prompt_tokens=min(prompt, _count(prompt_details, "cached_tokens")),
        reasoning_tokens=min(completion, _count(completion_details, "reasoning_tokens")),
        audio_prompt_tokens=min(prompt, _count(prompt_details, "audio_tokens")),
        audio_completion_tokens=min(completion, _count(completion_details, "audio_tokens")),
    )


def _finish(value: Any) -> Any:
    return value if value in _FINISH else ("stop" if value else None)


def _reasoning(fields: dict[str, Any]) -> str | None:
    """vLLM's and DeepSeek's `reasoning_content`, or OpenRouter's `reasoning`."""
    found = _text(fields.get("reasoning_content"), "reasoning_content")
    return found if found is not None else _text(fields.get("reasoning"), "reasoning")


def _logprobs(item: dict[str, Any]) -> Logprobs | None:
    content = _object(item.get("logprobs"), "logprobs").get("content")
    if content is None:
        return None
    if not isinstance(content, list) or not all(isinstance(e, dict) for e in content):
        raise _malformed("logprobs.content is not a list of objects")
    return content


def _fingerprint(raw: dict[str, Any]) -> str | None:
    value = raw.get("system_fingerprint")
    return value if isinstance(value, str) and len(value) <= 200 else None


def _service_tier(raw: dict[str, Any]) -> str | None:
    value = raw.get("service_tier")
    return value if value in _SERVICE_TIERS else None


def _call_fields(raw: dict[str, Any]) -> tuple[ToolKind, str | None, str | None]:
    """A call's kind, name and arguments (a custom call's `input`), whole or a delta's piece."""
    if raw.get("type") == "custom" or ("custom" in raw and "function" not in raw):
        custom = _object(raw.get("custom"), "custom tool call")
        return (
            "custom",
            _text(custom.get("name"), "tool call name"),
            _text(custom.get("input"), "custom tool call input"),
        )
    function = _object(raw.get("function"), "tool call function")
    return (
        "function",
        _text(function.get("name"), "tool call name"),
        _text(function.get("arguments"), "tool call arguments"),
    )


def _tool_call(raw: Any) -> ToolCall:
    if not isinstance(raw, dict):
        raise _malformed("a tool call is not an object")
    kind, name, arguments = _call_fields(raw)
    if not name:
        raise _malformed("a tool call has no name")
    call_id = _text(raw.get("id"), "tool call id") or "call_" + secrets.token_hex(12)
    return ToolCall(id=call_id, name=name, arguments=arguments or "", kind=kind)


def _audio(fields: dict[str, Any]) -> dict[str, Any] | None:
    """Audio output (`message.audio` / `delta.audio`): its string and integer fields, relayed."""
    audio = _object(fields.get("audio"), "audio")
    kept: dict[str, Any] = {}
    for name in ("id", "data", "transcript"):
        value = _text(audio.get(name), f"audio {name}")
        if value is not None:
            kept[name] = value
    expires = audio.get("expires_at")
    if expires is not None:
        if isinstance(expires, bool) or not isinstance(expires, int):
            raise _malformed("audio expires_at is not an integer")
        kept["expires_at"] = expires
    return kept or None


def _completion(raw: Any, n: int) -> Completion:
    body = _object(raw, "the body")
    items = _list(body.get("choices"), "choices")
    if not items:
        raise _malformed("no choices")
    choices: dict[int, Choice] = {}
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise _malformed("a choice is not an object")
        index = _index(item.get("index", position), n, "choice index")
        if index in choices:
            raise _malformed(f"choice {index} appears twice")
        message = _object(item.get("message"), "message")
        choices[index] = Choice(
            index=index,
            content=_text(message.get("content"), "content"),
            finish_reason=_finish(item.get("finish_reason")) or "stop",
            tool_calls=[_tool_call(c) for c in _list(message.get("tool_calls"), "tool_calls")],
            logprobs=_logprobs(item),
            reasoning=_reasoning(message),
            refusal=_text(message.get("refusal"), "refusal"),
            audio=_audio(message),
        )
    return Completion(
        choices=[choices[index] for index in sorted(choices)],
        usage=_usage(body.get("usage")),
        system_fingerprint=_fingerprint(body),
        service_tier=_service_tier(body),
    )


def _tool_call_delta(raw: Any) -> ToolCallDelta:
    if not isinstance(raw, dict):
        raise _malformed("a tool call delta is not an object")
    kind, name, arguments = _call_fields(raw)
    return ToolCallDelta(
        index=_index(raw.get("index", 0), _MAX_TOOL_CALLS, "tool call index"),
        id=_text(raw.get("id"), "tool call id"),
        name=name,
        arguments=arguments,
        # Only a piece that says its kind sets it: later pieces of a function call name none.
        kind=kind if raw.get("type") is not None or kind == "custom" else None,
    )


def _deltas(chunk: dict[str, Any], n: int) -> list[ChoiceDelta]:
    deltas = []
    for item in _list(chunk.get("choices"), "choices"):
        if not isinstance(item, dict):
            raise _malformed("a choice is not an object")
        delta = _object(item.get("delta"), "delta")
        calls = [_tool_call_delta(c) for c in _list(delta.get("tool_calls"), "tool_calls")]
        deltas.append(
            ChoiceDelta(
                index=_index(item.get("index", 0), n, "choice index"),
                content=_text(delta.get("content"), "content"),
                tool_calls=calls or None,
                finish_reason=_finish(item.get("finish_reason")),
                logprobs=_logprobs(item),
                system_fingerprint=_fingerprint(chunk),
                reasoning=_reasoning(delta),
                refusal=_text(delta.get("refusal"), "refusal"),
                service_tier=_service_tier(chunk),
                audio=_audio(delta),
            )
        )
    return deltas
