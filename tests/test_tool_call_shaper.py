"""How the embedded model's raw text becomes OpenAI's stream deltas (`_ChoiceShaper`): a call's
arguments go out in pieces as they are generated, never the wrapper's text, and an `auto` answer
that is no call is released as content. Fed the pieces an engine would emit, cut anywhere."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hanse.domain import ChoiceDelta, InferenceRequest
from hanse.providers.llama_engine import Piece
from hanse.providers.local import _ChoiceShaper

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
CALL = '{"name": "get_weather", "arguments": {"city": "Ham\\"burg", "days": [1, 2]}}'
ARGUMENTS = '{"city": "Ham\\"burg", "days": [1, 2]}'


def _request(tool_choice: Any) -> InferenceRequest:
    return InferenceRequest(model="m", messages=[], tools=TOOLS, tool_choice=tool_choice)


def _shape(mode: str, choice: Any, pieces: list[str], finish: str) -> list[ChoiceDelta]:
    shaper = _ChoiceShaper(0, mode, _request(choice))
    deltas = [delta for piece in pieces for delta in shaper.feed(Piece(piece))]
    return deltas + shaper.finish(finish)


def _cut(text: str, size: int) -> list[str]:
    return [text[at : at + size] for at in range(0, len(text), size)]


def _calls(deltas: list[ChoiceDelta]) -> tuple[list[str | None], list[str]]:
    """The names and the argument pieces the deltas carry."""
    names = [c.name for d in deltas for c in d.tool_calls or [] if c.name is not None]
    pieces = [c.arguments for d in deltas for c in d.tool_calls or [] if c.arguments]
    return names, pieces


@pytest.mark.parametrize("size", [1, 3, 7, len(CALL)])
@pytest.mark.parametrize(
    ("mode", "choice", "finish"),
    [
        ("forced", {"type": "function", "function": {"name": "get_weather"}}, "stop"),
        ("forced", "required", "tool_calls"),
        ("auto", "auto", "tool_calls"),
    ],
    ids=["named", "required", "auto"],
)
def test_a_call_streams_its_arguments_in_pieces(
    mode: str, choice: Any, finish: str, size: int
) -> None:
    deltas = _shape(mode, choice, _cut(CALL, size), "stop")
    names, pieces = _calls(deltas)
    assert names == ["get_weather"]
    assert "".join(pieces) == ARGUMENTS  # the wrapper's closing brace never goes out
    assert json.loads("".join(pieces)) == {"city": 'Ham"burg', "days": [1, 2]}
    if size < len(CALL) // 2:
        assert len(pieces) > 1  # in pieces, as generated, not one whole delta at the end
    assert all(d.content is None for d in deltas)
    assert deltas[-1].finish_reason == finish
    head = next(d for d in deltas if d.tool_calls)
    assert head.tool_calls is not None and head.tool_calls[0].id is not None


def test_an_auto_call_goes_out_before_it_ends() -> None:
    """The head and the first arguments are sent while the model is still generating."""
    shaper = _ChoiceShaper(0, "auto", _request("auto"))
    sent = [d for piece in _cut(CALL[:45], 5) for d in shaper.feed(Piece(piece))]
    names, pieces = _calls(sent)
    assert names == ["get_weather"] and "".join(pieces) == ARGUMENTS[: len(CALL[:45]) - 37]


def test_text_after_an_auto_call_is_dropped_and_the_call_finishes_tool_calls() -> None:
    deltas = _shape("auto", "auto", [CALL, " I hope that helps!"], "length")
    names, pieces = _calls(deltas)
    assert names == ["get_weather"] and "".join(pieces) == ARGUMENTS
    assert deltas[-1].finish_reason == "tool_calls"


def test_a_forced_call_cut_by_max_tokens_keeps_no_wrapper_text() -> None:
    deltas = _shape("forced", "required", _cut(CALL[:50], 4), "length")
    names, pieces = _calls(deltas)
    assert names == ["get_weather"]
    assert "".join(pieces) == CALL[37:50]
    assert all(d.content is None for d in deltas)
    assert deltas[-1].finish_reason == "length"


def test_a_forced_call_cut_inside_its_name_is_still_a_call() -> None:
    deltas = _shape("forced", "required", ['{"name": "get_ti'], "length")
    names, pieces = _calls(deltas)
    assert names == ["get_time"] and pieces == []
    assert deltas[-1].finish_reason == "length"


@pytest.mark.parametrize(
    "text",
    [
        "Hamburg is sunny today.",
        '{"name": "unknown_tool", "arguments": {}}',
        '{"name": "get_weather", "arguments": "sunny"}',
        '{"city": "Hamburg"}',
    ],
    ids=["prose", "unknown-name", "arguments-no-object", "plain-json"],
)
def test_an_auto_answer_that_is_no_call_is_content(text: str) -> None:
    deltas = _shape("auto", "auto", _cut(text, 3), "stop")
    assert "".join(d.content or "" for d in deltas) == text
    assert not any(d.tool_calls for d in deltas)
    assert deltas[-1].finish_reason == "stop"


def test_an_auto_call_with_its_keys_in_another_order_is_parsed_at_the_end() -> None:
    text = '{"arguments": {"city": "Hamburg"}, "name": "get_weather"}'
    deltas = _shape("auto", "auto", _cut(text, 4), "stop")
    names, pieces = _calls(deltas)
    assert names == ["get_weather"] and json.loads("".join(pieces)) == {"city": "Hamburg"}
    assert deltas[-1].finish_reason == "tool_calls"
