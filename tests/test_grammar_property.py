"""Property test: whatever JSON schema a client sends, building its grammar for the embedded model is
either a clean refusal (`GrammarRefused`, a 400) or a grammar llama.cpp takes, never a crash.

The schemas are generated (types, bounds up to well past the guard's limits, patterns, enums,
nesting, `anyOf`, local `$ref`s, recursion); each grammar is checked by a real llama.cpp in the
engine's child process, so a native crash would show up as `EngineCrashed` instead of killing pytest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hanse.providers.engine_process import EngineProcess
from hanse.providers.llama_engine import GrammarRefused, json_schema_grammar
from hanse.providers.local import embedded_model_path


@pytest.fixture(scope="module")
def engine() -> Iterator[EngineProcess]:
    process = EngineProcess(embedded_model_path(), n_ctx=512, n_threads=1)
    yield process
    process.close()


bound = st.one_of(st.integers(min_value=0, max_value=20), st.integers(min_value=0, max_value=5000))
number = st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6, allow_nan=False))
patterns = st.sampled_from(
    ["^a+$", "^(ab){0,3000}$", "^[a-z]{2,8}$", "^(a|a){1,24}b$", "x{1000}", "^\\d{3}-\\d{4}$", "("]
)


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    string = st.fixed_dictionaries(
        {"type": st.just("string")},
        optional={"minLength": bound, "maxLength": bound, "pattern": patterns},
    )
    numeric = st.fixed_dictionaries(
        {"type": st.sampled_from(["integer", "number"])},
        optional={
            "minimum": number,
            "maximum": number,
            "exclusiveMinimum": number,
            "exclusiveMaximum": number,
        },
    )
    return st.one_of(
        string,
        numeric,
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.builds(lambda values: {"enum": values}, st.lists(st.text(max_size=5), min_size=1)),
        st.builds(lambda value: {"const": value}, st.one_of(st.integers(), st.text(max_size=5))),
        st.just({"$ref": "#"}),
        st.just({"$ref": "#/$defs/missing"}),
        st.just({}),
    )


def _extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    obj = st.builds(
        lambda props, required, extra: {
            "type": "object",
            "properties": props,
            "required": [k for k in props if k in required],
            **({"additionalProperties": extra} if extra is not None else {}),
        },
        st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), children, max_size=4),
        st.sets(st.sampled_from(["a", "b", "c", "d"])),
        st.one_of(st.none(), st.booleans()),
    )
    array = st.builds(
        lambda items, low, high: {
            "type": "array",
            "items": items,
            "minItems": low,
            "maxItems": high,
        },
        children,
        bound,
        bound,
    )
    any_of = st.builds(
        lambda options: {"anyOf": options}, st.lists(children, min_size=1, max_size=3)
    )
    return st.one_of(obj, array, any_of)


schemas = st.recursive(_leaf(), _extend, max_leaves=12).map(
    lambda schema: {**schema, "$defs": {"node": {"type": "object", "properties": {"n": schema}}}}
)


OUTCOMES: Counter[str] = Counter()


def _outcome(engine: EngineProcess, schema: dict[str, Any]) -> str:
    """`built`, or the refusal's problem; anything else (a crash included) raises."""
    try:
        grammar = json_schema_grammar(schema)
        engine.check_grammar(grammar)  # EngineCrashed here would be the bug
    except GrammarRefused as refusal:
        return refusal.problem or "a refusal without a problem"
    return "built"


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(schema=schemas)
def test_a_grammar_is_built_or_refused_never_a_crash(
    engine: EngineProcess, schema: dict[str, Any]
) -> None:
    outcome = _outcome(engine, schema)
    assert outcome != "a refusal without a problem"
    OUTCOMES["built" if outcome == "built" else "refused"] += 1
    assert engine.restarts == 0


def test_the_generated_schemas_reached_both_outcomes() -> None:
    """Runs after the property: it exercised llama.cpp's grammars, not only the guard's refusals."""
    assert OUTCOMES["built"] >= 20
    assert OUTCOMES["refused"] >= 20
