"""The embedded engine in a child process: a native crash in llama.cpp ends that process, not the gateway.

`EngineProcess` offers what the local provider uses of `LlamaEngine` (`n_ctx`, `prompt_tokens`,
`check_grammar`, `generate`) and forwards each call over a pipe to a child process that holds the
weights. When the child dies (a segfault, an abort, the OOM killer), the calls in flight raise
`EngineCrashed`, which the provider reports as a provider failure, and a new child is started in the
background; until it is ready, calls raise `EngineCrashed` at once rather than wait.

Wire format (pickled tuples): the parent sends `(kind, call_id, *args)` with kind `tokens`, `grammar`,
`generate` or `cancel`; the child answers `(kind, call_id, payload)` with kind `result`, `item`, `end`,
`cancelled` or `error`. Generations run one at a time on the child's own worker thread; tokenizing and
grammar checks are answered at once by its main thread (they only read the vocabulary).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import queue
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn

from hanse.providers.llama_engine import (
    Cancelled,
    GrammarRefused,
    LlamaEngine,
    Outcome,
    Piece,
    SamplingParams,
)

log = logging.getLogger("hanse.engine")
_CONTEXT = multiprocessing.get_context("spawn")  # no fork: the parent has threads and an event loop
START_TIMEOUT_S = 300.0
_CANCEL_POLL_S = 0.05
_CRASHED = ("crashed", 0, None)


class EngineCrashed(RuntimeError):
    """The engine's process died (or is being restarted); the call did not complete."""


class EngineProcess:
    """`LlamaEngine`'s interface, served by a child process that is restarted when it dies."""

    def __init__(self, model_path: str, n_ctx: int, n_threads: int) -> None:
        """Start the child and wait until its model is loaded (blocking: call it off the loop)."""
        self._args = (model_path, n_ctx, n_threads)
        self.n_ctx = n_ctx
        self.restarts = 0
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._pending: dict[int, queue.Queue[tuple[str, int, Any]]] = {}
        self._closed = False
        self._alive = threading.Event()
        self._conn, self._process = self._spawn()

    @property
    def pid(self) -> int | None:
        """The child's process id (for operators and tests)."""
        return self._process.pid

    def wait_ready(self, timeout_s: float) -> bool:
        """True once a child is serving (after a restart too)."""
        return self._alive.wait(timeout_s)

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> list[int]:
        result: list[int] = self._call("tokens", messages)
        return result

    def check_grammar(self, grammar: str) -> None:
        self._call("grammar", grammar)

    def generate(
        self, tokens: list[int], params: SamplingParams, cancelled: threading.Event
    ) -> Iterator[Piece | Outcome]:
        """Yield what the child's `LlamaEngine.generate` yields; `cancelled` is passed on to it."""
        call_id, answers = self._open("generate", tokens, params)
        asked_to_cancel = False
        try:
            while True:
                if cancelled.is_set() and not asked_to_cancel:  # checked between every piece
                    asked_to_cancel = True
                    self._send(("cancel", call_id))
                try:
                    kind, _, payload = answers.get(timeout=_CANCEL_POLL_S)
                except queue.Empty:
                    continue
                if kind == "item":
                    yield payload
                elif kind == "end":
                    return
                else:
                    _raise(kind, payload)
        finally:
            self._pending.pop(call_id, None)

    def close(self) -> None:
        self._closed = True
        self._alive.clear()
        with contextlib.suppress(EngineCrashed):
            self._send(("exit", 0))
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()

    def _call(self, kind: str, *args: Any) -> Any:
        call_id, answers = self._open(kind, *args)
        try:
            answer, _, payload = answers.get()
        finally:
            self._pending.pop(call_id, None)
        if answer == "result":
            return payload
        _raise(answer, payload)

    def _open(self, kind: str, *args: Any) -> tuple[int, queue.Queue[tuple[str, int, Any]]]:
        if not self._alive.is_set():
            raise EngineCrashed("the embedded engine is restarting")
        call_id = next(self._ids)
        answers: queue.Queue[tuple[str, int, Any]] = queue.Queue()
        self._pending[call_id] = answers
        try:
            self._send((kind, call_id, *args))
        except EngineCrashed:
            self._pending.pop(call_id, None)
            raise
        return call_id, answers

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            with self._send_lock:
                self._conn.send(message)
        except (OSError, EOFError, ValueError) as exc:
            raise EngineCrashed("the embedded engine's process is gone") from exc

    def _spawn(self) -> tuple[Connection, BaseProcess]:
        parent, child = _CONTEXT.Pipe()
        process = _CONTEXT.Process(
            target=serve, args=(child, *self._args), name="hanse-engine", daemon=True
        )
        process.start()
        child.close()
        if not parent.poll(START_TIMEOUT_S):
            process.kill()
            raise RuntimeError("the embedded engine did not start in time")
        try:
            ready = parent.recv()
        except EOFError:
            raise RuntimeError(
                f"the embedded engine exited at start ({process.exitcode})"
            ) from None
        if ready[0] != "ready":
            raise RuntimeError(f"the embedded engine failed to start: {ready[2]}")
        threading.Thread(target=self._read, args=(parent,), name="hanse-engine-reader").start()
        self._alive.set()
        return parent, process

    def _read(self, conn: Connection) -> None:
        """Dispatch the child's answers; at its death, fail what is in flight and restart it."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            answers = self._pending.get(message[1])
            if answers is not None:
                answers.put(message)
        self._alive.clear()
        for answers in list(self._pending.values()):
            answers.put(_CRASHED)
        if not self._closed:
            self._restart()

    def _restart(self) -> None:
        with self._state_lock:
            self._process.join(1)
            log.error(
                "the embedded engine died; restarting it",
                extra={"exitcode": self._process.exitcode, "restarts": self.restarts + 1},
            )
            self.restarts += 1
            try:
                self._conn, self._process = self._spawn()
            except RuntimeError:
                log.exception("the embedded engine could not be restarted")


def _raise(kind: str, payload: Any) -> NoReturn:
    if kind == "cancelled":
        raise Cancelled(int(payload))
    if kind == "crashed":
        raise EngineCrashed("the embedded engine's process died during the call")
    name, text = payload
    if name == "GrammarRefused":
        raise GrammarRefused(text)
    raise RuntimeError(f"the embedded engine failed: {name}")


def serve(conn: Connection, model_path: str, n_ctx: int, n_threads: int) -> None:
    """The child's main: load the model, then answer the parent until it says `exit` or goes."""
    try:
        engine = LlamaEngine(model_path, n_ctx, n_threads)
    except Exception as exc:
        conn.send(("failed", 0, type(exc).__name__))
        return
    send_lock = threading.Lock()

    def send(message: tuple[str, int, Any]) -> None:
        with send_lock:
            conn.send(message)

    jobs: queue.Queue[tuple[int, list[int], SamplingParams] | None] = queue.Queue()
    cancels: dict[int, threading.Event] = {}

    def generations() -> None:
        while (job := jobs.get()) is not None:
            call_id, tokens, params = job
            event = cancels.setdefault(call_id, threading.Event())
            try:
                for item in engine.generate(tokens, params, event):
                    send(("item", call_id, item))
                send(("end", call_id, None))
            except Cancelled as exc:
                send(("cancelled", call_id, exc.completion_tokens))
            except Exception as exc:
                send(("error", call_id, _described(exc)))
            finally:
                cancels.pop(call_id, None)

    worker = threading.Thread(target=generations, name="hanse-engine-generate", daemon=True)
    worker.start()
    send(("ready", 0, None))
    while True:
        try:
            kind, call_id, *args = conn.recv()
        except (EOFError, OSError):
            break  # the parent is gone
        if kind == "exit":
            break
        if kind == "generate":
            cancels[call_id] = threading.Event()
            jobs.put((call_id, args[0], args[1]))
        elif kind == "cancel":
            cancels.get(call_id, threading.Event()).set()
        else:
            try:
                if kind == "tokens":
                    send(("result", call_id, engine.prompt_tokens(args[0])))
                else:
                    engine.check_grammar(args[0])
                    send(("result", call_id, None))
            except Exception as exc:
                send(("error", call_id, _described(exc)))
    jobs.put(None)


def _described(exc: Exception) -> tuple[str, str]:
    """What crosses the pipe of an exception: its type's name and, for a refusal, its problem."""
    return type(exc).__name__, exc.problem if isinstance(exc, GrammarRefused) else ""
