"""A provider that forwards to any OpenAI-shaped upstream (vLLM, SGLang, llama.cpp server, OpenAI...)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

from hanse.config.schema import ModelConfig, ProviderConfig, RouteConfig
from hanse.domain import (
    Choice,
    ChoiceDelta,
    Completion,
    InferenceRequest,
    StreamEvent,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from hanse.errors import CONTENT_FILTERED, PROVIDER_REJECTED, HanseError
from hanse.providers.base import ProviderFailure
from hanse.tokens import estimate_tokens

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


class OpenAICompatibleProvider:
    """Forwards requests over a pooled HTTP client; streams are relayed chunk by chunk."""

    def __init__(self, config: ProviderConfig) -> None:
        self.id = config.id
        self._config = config
        self._url = f"{(config.base_url or '').rstrip('/')}/chat/completions"
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        headers = {"Content-Type": "application/json"}
        if self._config.api_key_env:
            secret = os.environ.get(self._config.api_key_env)
            if secret:
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
            return _completion(orjson.loads(raw))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ProviderFailure("malformed", "the provider sent a malformed answer") from exc

    async def stream(
        self, request: InferenceRequest, route: RouteConfig
    ) -> AsyncGenerator[StreamEvent, None]:
        body = self._body(request, route)
        usage: Usage | None = None
        completion_chars = 0
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
                    chunk = _loads_chunk(data)
                    if chunk.get("usage"):
                        usage = _usage(chunk["usage"])
                    for delta in _deltas(chunk):
                        completion_chars += len(delta.content or "")
                        started.add(delta.index)
                        if delta.finish_reason:
                            finished.add(delta.index)
                        yield delta
                else:
                    # The body ended without [DONE]: a truncated answer unless every choice finished.
                    if not started or started - finished:
                        raise ProviderFailure("connect", "the provider ended the stream early")
            except TimeoutError as exc:  # first: aiohttp's read timeout is a connection error too
                raise ProviderFailure("timeout", "the provider stopped sending") from exc
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                raise ProviderFailure("connect", "the provider cut the stream") from exc
        prompt = estimate_tokens(request.messages) + request.image_tokens
        yield usage or Usage(prompt, (completion_chars + 3) // 4)

    def _body(self, request: InferenceRequest, route: RouteConfig) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": route.upstream_model or request.model,
            "messages": request.messages,
        }
        for name in _OPTIONAL:
            value = getattr(request, name)
            if value is not None:
                body[name] = value
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
        if response.status == 200:
            return
        message, code = _upstream_error(await self._read(response))
        status = response.status
        if status == 429:
            raise ProviderFailure(
                "rate_limited",
                "the provider is rate-limited",
                status=status,
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        if status in (401, 403):
            raise ProviderFailure(
                "auth", "the provider refused the gateway's credentials", status=status
            )
        if status >= 500 or status in (404, 408):
            raise ProviderFailure("server", f"the provider answered {status}", status=status)
        if code in _CONTENT_FILTER_CODES:
            raise HanseError(CONTENT_FILTERED, details={"provider_message": message}, param=None)
        raise HanseError(
            PROVIDER_REJECTED,
            f"The provider rejected the request: {message}",
            details={"provider_status": status, "provider_message": message},
        )

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


def _upstream_error(raw: bytes) -> tuple[str, str | None]:
    """The message and code of an upstream's OpenAI-shaped error body (truncated, never trusted)."""
    try:
        error = orjson.loads(raw).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return raw[:200].decode("utf-8", "replace") or "no message", None
    if not isinstance(error, dict):
        return (str(error)[:500] if error else "no message"), None
    code = error.get("code")
    message = error.get("message")
    return (str(message)[:500] if message else "no message"), (
        code if isinstance(code, str) else None
    )


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _loads_chunk(data: bytes) -> dict[str, Any]:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProviderFailure("malformed", "the provider sent a malformed chunk") from exc
    if not isinstance(chunk, dict):
        raise ProviderFailure("malformed", "the provider sent a malformed chunk")
    if "error" in chunk:
        raise ProviderFailure("server", "the provider reported an error mid-stream")
    return chunk


def _usage(raw: dict[str, Any]) -> Usage:
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))


def _finish(value: Any) -> Any:
    return value if value in _FINISH else ("stop" if value else None)


def _completion(raw: dict[str, Any]) -> Completion:
    choices: list[Choice] = []
    for item in raw["choices"]:
        message = item.get("message") or {}
        calls = [
            ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"])
            for c in message.get("tool_calls") or []
        ]
        logprobs = (item.get("logprobs") or {}).get("content")
        choices.append(
            Choice(
                index=int(item.get("index", len(choices))),
                content=message.get("content"),
                finish_reason=_finish(item.get("finish_reason")) or "stop",
                tool_calls=calls,
                logprobs=logprobs,
            )
        )
    usage = _usage(raw.get("usage") or {})
    return Completion(
        choices=choices, usage=usage, system_fingerprint=raw.get("system_fingerprint")
    )


def _deltas(chunk: dict[str, Any]) -> list[ChoiceDelta]:
    deltas = []
    for item in chunk.get("choices") or []:
        delta = item.get("delta") or {}
        calls = [
            ToolCallDelta(
                index=int(c.get("index", 0)),
                id=c.get("id"),
                name=(c.get("function") or {}).get("name"),
                arguments=(c.get("function") or {}).get("arguments"),
            )
            for c in delta.get("tool_calls") or []
        ]
        logprobs = (item.get("logprobs") or {}).get("content")
        deltas.append(
            ChoiceDelta(
                index=int(item.get("index", 0)),
                content=delta.get("content"),
                tool_calls=calls or None,
                finish_reason=_finish(item.get("finish_reason")),
                logprobs=logprobs,
                system_fingerprint=chunk.get("system_fingerprint"),
            )
        )
    return deltas
