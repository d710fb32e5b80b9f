"""Schemas llama.cpp cannot take as a grammar are refused with a 400, and the process survives."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from llama_cpp import llama_grammar

from hanse.providers.llama_engine import (
    GrammarRefused,
    LlamaEngine,
    check_schema_bounds,
    json_schema_grammar,
)
from hanse.providers.local import embedded_model_path
from tests.harness import GatewayProcess

MODEL = "smollm2-135m"
HELLO = [{"role": "user", "content": "Say hi."}]


def _schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


HOSTILE: dict[str, dict[str, Any]] = {
    "max_length": {"response_format": _schema({"type": "string", "maxLength": 3000})},
    "max_items": {"response_format": _schema({"type": "array", "maxItems": 3000})},
    "pattern": {"response_format": _schema({"type": "string", "pattern": "^(ab){0,3000}$"})},
    "self_ref": {"response_format": _schema({"$ref": "#"})},
    "defs_cycle": {
        "response_format": _schema(
            {
                "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                "$ref": "#/$defs/a",
            }
        )
    },
    "remote_ref": {"response_format": _schema({"$ref": "https://example.com/x.json"})},
    "tool": {
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "f",
                    "parameters": {
                        "type": "object",
                        "properties": {"a": {"type": "string", "maxLength": 2000}},
                    },
                },
            }
        ],
        "tool_choice": "required",
    },
}


def _post(gateway: GatewayProcess, key: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL, "messages": HELLO, "max_tokens": 4, **body},
        timeout=120,
    )


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_schema_is_a_400(gateway: GatewayProcess, api_key: str, name: str) -> None:
    response = _post(gateway, api_key, **HOSTILE[name])
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_4005"
    assert error["type"] == "invalid_request_error"
    if name != "remote_ref":  # the request schema check refuses a remote `$ref` even earlier
        assert "grammar" in error["message"]
    assert gateway.process is not None and gateway.process.poll() is None
    # The process is alive and the engine still generates.
    again = _post(gateway, api_key, max_tokens=2)
    assert again.status_code == 200, again.text
    assert again.json()["choices"][0]["finish_reason"] in ("length", "stop")


def test_a_bounded_schema_converts() -> None:
    assert "root" in json_schema_grammar({"type": "string", "maxLength": 20})
    check_schema_bounds({"type": "string", "pattern": "^(ab){0,20}$"})


def test_the_null_sampler_check_refuses_what_llama_cpp_refuses() -> None:
    """The last line of defence: a grammar over llama.cpp's own limits, built past the bounds."""
    engine = LlamaEngine(embedded_model_path(), 512, 1)
    engine.check_grammar(json_schema_grammar({"type": "string", "maxLength": 20}))
    oversized = str(llama_grammar.json_schema_to_gbnf('{"type": "string", "maxLength": 3000}'))
    with pytest.raises(GrammarRefused):
        engine.check_grammar(oversized)
