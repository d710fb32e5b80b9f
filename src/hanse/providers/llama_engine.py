"""The embedded model: one llama.cpp context, driven token by token from one worker thread.

Everything here is synchronous and runs on the provider's single generation thread (tokenizing
excepted, which only reads the vocabulary). The loop is ours rather than llama-cpp-python's
`create_completion` so that stop strings, cancellation, grammars and logprobs of the sampled
token (read from the last position's logits, no `logits_all` buffer) all live in one place.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import math
import os
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
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit (-100 bans it)


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
        with _stderr_silenced():  # llama.cpp prints a refused grammar: a vault skill's schema
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
            logits_processor=_biased(params.logit_bias, self.n_vocab),
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


# llama.cpp expands every bounded repetition into nested rules and refuses (a NULL sampler, which
# llama-cpp-python would then use: SIGSEGV) past its own "sane defaults". Bounds above this limit
# are refused before any conversion; see docs/security.md.
GRAMMAR_REPETITION_LIMIT = 500
GRAMMAR_SCHEMA_DEPTH_LIMIT = 64
_BOUND_KEYS = ("maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties")
_REGEX_COUNT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def _biased(bias: dict[int, float] | None, n_vocab: int) -> llama_cpp.LogitsProcessorList | None:
    """`logit_bias` as llama.cpp's logits processor; ids outside the vocabulary are ignored."""
    if not bias:
        return None
    ids = np.array([i for i in bias if 0 <= i < n_vocab], dtype=np.intc)
    values = np.array([bias[int(i)] for i in ids], dtype=np.single)

    def add(_: Any, scores: Any) -> Any:
        scores[ids] += values
        return scores

    return llama_cpp.LogitsProcessorList([add])


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the block: what native code writes there is
    dropped (Python's own logging does not go through it)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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
        converter = _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        converter.visit(converter.resolve_refs(json.loads(json.dumps(schema)), "stdin"), "")
        return str(converter.format_grammar())
    except Exception as exc:  # RecursionError, KeyError, ValueError, AssertionError, ...
        # Its type only: the converter's message quotes the schema, which may be a vault secret.
        raise GrammarRefused(
            f"the grammar converter cannot express it ({type(exc).__name__})"
        ) from exc


# A JSON string holds no raw control character, quote or backslash: the converter's own `char`
# (`[^"\\]`) lets newlines and tabs through, which no JSON parser accepts.
_JSON_CHAR = r'[^"\\\x00-\x1F\x7F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
# A pattern's `.` inside a JSON string: the same characters, unescaped.
_JSON_DOT = r'[^"\\\x00-\x1F\x7F]'
_FRACTION_ANY = '("." [0-9]{1,15})?'
_FRACTION_ZERO = '("." "0"{1,15})?'
_FRACTION_NONZERO = '"." [0-9]{0,14} [1-9]'
_MAX_DIGITS = 16
_NUMERIC_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")

Bound = tuple[int, bool]  # an integral value, and whether it is itself allowed


class _Converter(llama_grammar.SchemaConverter):
    """llama-cpp-python's converter with JSON-valid strings and numeric bounds in the grammar."""

    def _add_primitive(self, name: str, rule: Any) -> Any:
        if name == "char":
            rule = llama_grammar.BuiltinRule(_JSON_CHAR, [])
        return super()._add_primitive(name, rule)

    def _add_rule(self, name: str, rule: str) -> Any:
        return super()._add_rule(name, _JSON_DOT if name == "dot" else rule)

    def visit(self, schema: Any, name: str) -> Any:
        kind = schema.get("type") if isinstance(schema, dict) else None
        if (
            kind in ("integer", "number")
            and any(key in schema for key in _NUMERIC_BOUNDS)
            # Past 15 digits the converter's own number rule is no looser: it is left to the check.
            and all(abs(schema.get(key, 0)) < 10**15 for key in _NUMERIC_BOUNDS)
            and not any(key in schema for key in ("$ref", "const", "enum", "anyOf", "oneOf"))
        ):
            rule_name = name + "-" if name in llama_grammar.RESERVED_NAMES else name or "root"
            return self._add_rule(rule_name, bounded_number_rule(schema, kind == "integer"))
        return super().visit(schema, name)


def bounded_number_rule(schema: dict[str, Any], integer: bool) -> str:
    """A GBNF rule for the numbers within the schema's bounds (no exponent).

    Integral bounds are exact; a fractional bound is widened to the next integer (exclusive), so the
    grammar admits a superset and the check after generation settles the rest."""
    low = _bound(schema, "minimum", "exclusiveMinimum", upper=False, integer=integer)
    high = _bound(schema, "maximum", "exclusiveMaximum", upper=True, integer=integer)
    options: list[str] = []
    # Negative values -m: v >= low means m <= -low; v <= high (when high <= 0) means m >= -high.
    if low is None or low[0] < 0:
        magnitude_low = None if high is None or high[0] > 0 else (-high[0], high[1])
        magnitude_high = None if low is None else (-low[0], low[1])
        body = _magnitude(magnitude_low, magnitude_high, integer)
        if body:
            options.append(f'"-" ({body})')
    if high is None or high[0] > 0 or (high[0] == 0 and high[1]):
        magnitude_low = None if low is None or low[0] < 0 else low
        body = _magnitude(magnitude_low, high, integer)
        if body:
            options.append(body)
    if not options:
        raise GrammarRefused("the numeric bounds admit no value")
    return f"({' | '.join(options)}) space"


def _bound(
    schema: dict[str, Any], inclusive: str, exclusive: str, *, upper: bool, integer: bool
) -> Bound | None:
    """The tighter of the inclusive and exclusive bound, as an integer (widened when fractional)."""
    found: list[Bound] = []
    for key, allowed in ((inclusive, True), (exclusive, False)):
        value = schema.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        whole = math.floor(value) if upper else math.ceil(value)
        if whole != value:  # a fractional bound: the next integer outward, excluded
            whole, allowed = (whole + 1, False) if upper else (whole - 1, False)
        if integer and not allowed:  # integers: an excluded bound is the next integer included
            whole, allowed = (whole - 1, True) if upper else (whole + 1, True)
        found.append((int(whole), allowed))
    if not found:
        return None
    # The tighter bound: the lowest upper bound, the highest lower bound (exclusive wins a tie).
    return (
        min(found, key=lambda b: (b[0], b[1]))
        if upper
        else max(found, key=lambda b: (b[0], not b[1]))
    )


def _magnitude(low: Bound | None, high: Bound | None, integer: bool) -> str:
    """Non-negative decimals m with low <= m <= high (each end inclusive or not); "" when none."""
    options: list[str] = []
    start = 0 if low is None else low[0] if low[1] else low[0] + 1
    if low is not None and not low[1] and not integer and (high is None or low[0] < high[0]):
        options.append(f"{_whole(low[0], low[0])} {_FRACTION_NONZERO}")
    end: int | None = None
    if high is not None:
        end = high[0] - 1
        if high[1] and high[0] >= start:
            options.append(_whole(high[0], high[0]) + ("" if integer else f" {_FRACTION_ZERO}"))
    if end is None or start <= end:
        options.append(_whole(start, end) + ("" if integer else f" {_FRACTION_ANY}"))
    return " | ".join(f"({option})" for option in options)


def _whole(low: int, high: int | None) -> str:
    """Integers low..high (no upper limit: None) in decimal without leading zeros."""
    options = []
    digits = len(str(low))
    top = _MAX_DIGITS if high is None else len(str(high))
    for length in range(digits, top + 1):
        first = low if length == digits else 10 ** (length - 1)
        last = 10**length - 1 if high is None or length < top else high
        if high is None and length > digits:
            options.append(f"[1-9] [0-9]{{{length - 1},{_MAX_DIGITS - 1}}}")
            break
        options.append(_same_length(str(first), str(last)))
    return options[0] if len(options) == 1 else "(" + " | ".join(options) + ")"


def _same_length(low: str, high: str) -> str:
    """Digit strings of one length from low to high, as GBNF."""
    if len(low) == 1:
        return f"[{low}-{high}]" if low != high else f'"{low}"'
    rest = len(low) - 1
    if low[0] == high[0]:
        return f'"{low[0]}" {_same_length(low[1:], high[1:])}'
    if low[1:] == "0" * rest and high[1:] == "9" * rest:
        return f"[{low[0]}-{high[0]}] [0-9]{{{rest}}}"
    options = [f'"{low[0]}" ({_same_length(low[1:], "9" * rest)})']
    if int(high[0]) - int(low[0]) > 1:
        options.append(f"[{int(low[0]) + 1}-{int(high[0]) - 1}] [0-9]{{{rest}}}")
    options.append(f'"{high[0]}" ({_same_length("0" * rest, high[1:])})')
    return "(" + " | ".join(options) + ")"


JSON_OBJECT_GRAMMAR: str = json_schema_grammar({"type": "object"})
