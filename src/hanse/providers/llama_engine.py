"""The embedded model: one llama.cpp context, driven token by token from one worker thread.

Everything here is synchronous and runs on the provider's single generation thread (tokenizing
excepted, which only reads the vocabulary). The loop is ours rather than llama-cpp-python's
`create_completion` so that stop strings, cancellation, grammars and logprobs of the sampled
token (read from the last position's logits, no `logits_all` buffer) all live in one place.
"""

from __future__ import annotations

import codecs
import json
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import llama_grammar
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import LlamaGrammar


@dataclass(slots=True)
class SamplingParams:
    """What llama.cpp's sampler chain needs for one choice."""

    max_tokens: int
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    grammar: str | None = None
    top_logprobs: int | None = None
    logprobs: bool = False


@dataclass(slots=True)
class Piece:
    """Text produced by one step, with the logprob entries of the tokens behind it."""

    text: str
    logprobs: list[dict[str, Any]] | None = None


@dataclass(slots=True)
class Outcome:
    """How a generation ended."""

    finish_reason: str = "length"
    completion_tokens: int = 0


class Cancelled(Exception):
    """The client went away; the generation stopped after `completion_tokens` tokens."""

    def __init__(self, completion_tokens: int) -> None:
        self.completion_tokens = completion_tokens
        super().__init__(f"cancelled after {completion_tokens} tokens")


class LlamaEngine:
    """The loaded weights plus the chat template that turns messages into a prompt."""

    def __init__(self, model_path: str, n_ctx: int, n_threads: int) -> None:
        self.llama = llama_cpp.Llama(
            model_path=model_path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_batch=512,
            logits_all=False,
            verbose=False,
        )
        metadata = self.llama.metadata
        vocab = self.llama._model.vocab
        eos = self.llama.detokenize([self.llama.token_eos()], special=True).decode(
            "utf-8", "replace"
        )
        bos = self.llama.detokenize([self.llama.token_bos()], special=True).decode(
            "utf-8", "replace"
        )
        self._formatter = Jinja2ChatFormatter(
            template=metadata["tokenizer.chat_template"], eos_token=eos, bos_token=bos
        )
        self._vocab = vocab
        self.n_ctx = n_ctx
        self.n_vocab = self.llama.n_vocab()
        self._seed_source = random.SystemRandom()

    def check_grammar(self, grammar: str) -> None:
        """Raise `GrammarRefused` when llama.cpp will not build a sampler for `grammar`.

        llama.cpp answers a grammar it refuses with NULL; handing that on crashes the process, so
        every grammar is built once here (it only reads the vocabulary) before a generation."""
        sampler = llama_cpp.llama_sampler_init_grammar(
            self._vocab, grammar.encode("utf-8"), b"root"
        )
        if not sampler:
            raise GrammarRefused("llama.cpp refused the grammar built from this schema (too large)")
        llama_cpp.llama_sampler_free(sampler)

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> list[int]:
        """The chat template applied to `messages`, tokenized with the model's own tokenizer."""
        prompt = self._formatter(messages=messages).prompt  # type: ignore[arg-type]
        return self.llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def generate(
        self,
        tokens: list[int],
        params: SamplingParams,
        cancelled: threading.Event,
    ) -> Iterator[Piece | Outcome]:
        """Yield text pieces, then the `Outcome`. Stop strings never reach the output."""
        llama = self.llama
        llama.reset()
        llama.set_seed(
            params.seed if params.seed is not None else self._seed_source.getrandbits(31)
        )
        grammar = (
            LlamaGrammar.from_string(params.grammar, verbose=False) if params.grammar else None
        )
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        held = ""  # text that could still be the start of a stop string
        held_logprobs: list[dict[str, Any]] = []
        outcome = Outcome()
        generator = llama.generate(
            tokens,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            temp=params.temperature,
            repeat_penalty=1.0,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            grammar=grammar,
            reset=True,
        )
        try:
            for token in generator:
                if cancelled.is_set():
                    raise Cancelled(outcome.completion_tokens)
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    outcome.finish_reason = "stop"
                    break
                outcome.completion_tokens += 1
                raw = llama.detokenize([token], prev_tokens=tokens)
                tokens = [*tokens, token]
                held += decoder.decode(raw)
                if params.logprobs:
                    held_logprobs.append(self._logprob_entry(token, raw, params.top_logprobs))
                cut = _stop_index(held, params.stop)
                if cut is not None:
                    if cut:
                        yield Piece(held[:cut], held_logprobs or None)
                    outcome.finish_reason = "stop"
                    break
                safe = len(held) - _stop_prefix_length(held, params.stop)
                if safe > 0:
                    yield Piece(held[:safe], held_logprobs or None)
                    held, held_logprobs = held[safe:], []
                if outcome.completion_tokens >= params.max_tokens or len(tokens) >= self.n_ctx:
                    break
            else:
                outcome.finish_reason = "stop"
        finally:
            generator.close()
        if outcome.finish_reason == "length" and held:
            yield Piece(held, held_logprobs or None)
        yield outcome

    def _logprob_entry(self, token: int, raw: bytes, top: int | None) -> dict[str, Any]:
        pointer = llama_cpp.llama_get_logits_ith(self.llama._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).astype(np.float64)
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        entry: dict[str, Any] = {
            "token": raw.decode("utf-8", "replace"),
            "logprob": float(logprobs[token]),
            "bytes": list(raw),
            "top_logprobs": [],
        }
        if top:
            best = np.argpartition(-logprobs, top)[:top]
            for candidate in sorted(best, key=lambda i: -logprobs[i]):
                piece = self.llama.detokenize([int(candidate)])
                entry["top_logprobs"].append(
                    {
                        "token": piece.decode("utf-8", "replace"),
                        "logprob": float(logprobs[candidate]),
                        "bytes": list(piece),
                    }
                )
        return entry


def _stop_index(text: str, stops: list[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _stop_prefix_length(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could begin a stop string."""
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest


JSON_OBJECT_GRAMMAR: str = llama_grammar.JSON_GBNF


# llama.cpp expands every bounded repetition into nested rules and refuses (a NULL sampler, which
# llama-cpp-python would then use: SIGSEGV) past its own "sane defaults". Bounds above this limit
# are refused before any conversion; see docs/security.md.
GRAMMAR_REPETITION_LIMIT = 500
GRAMMAR_SCHEMA_DEPTH_LIMIT = 64
_BOUND_KEYS = ("maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties")
_REGEX_COUNT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


class GrammarRefused(ValueError):
    """The schema or grammar cannot be enforced by llama.cpp; the request is at fault."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


def check_schema_bounds(schema: Any, limit: int = GRAMMAR_REPETITION_LIMIT) -> None:
    """Refuse a schema whose lengths, item counts or pattern repetitions exceed `limit`."""
    pending: list[tuple[Any, int]] = [(schema, 0)]
    while pending:
        node, depth = pending.pop()
        if depth > GRAMMAR_SCHEMA_DEPTH_LIMIT:
            raise GrammarRefused(f"the schema nests deeper than {GRAMMAR_SCHEMA_DEPTH_LIMIT}")
        if isinstance(node, list):
            pending.extend((item, depth + 1) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        for key in _BOUND_KEYS:
            value = node.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > limit:
                raise GrammarRefused(
                    f"`{key}` is {value}; the embedded model allows at most {limit}"
                )
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            for match in _REGEX_COUNT.finditer(pattern):
                counts = [int(n) for n in match.groups() if n]
                if any(n > limit for n in counts):
                    raise GrammarRefused(
                        f"`pattern` repeats {max(counts)} times; the embedded model allows at most"
                        f" {limit}"
                    )
        pending.extend((value, depth + 1) for value in node.values())


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """The GBNF grammar that only admits JSON valid against `schema`.

    Raises `GrammarRefused` for a schema over the bounds or one the converter cannot handle
    (recursive or remote `$ref`s, unknown features): never a bare converter exception."""
    check_schema_bounds(schema)
    try:
        return str(llama_grammar.json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # RecursionError, KeyError, ValueError, AssertionError, ...
        raise GrammarRefused(f"the grammar converter cannot express it: {str(exc)[:200]}") from exc
