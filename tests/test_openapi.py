"""/openapi.json describes what the server accepts and answers: real answers validate against it, and
schemathesis, on a bounded budget, finds no 5xx and no answer that breaks it (gateway on 127.0.0.1 only).

Positive cases are generated from the document, then given `max_tokens: 2` and the embedded model, so
that each valid request runs the real model briefly; negative cases are sent as generated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.harness import GatewayProcess

MODEL = "smollm2-135m"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def document(gateway: GatewayProcess) -> dict[str, Any]:
    response = httpx.get(f"{gateway.base_url}/openapi.json", timeout=30)
    assert response.status_code == 200
    return dict(response.json())


def validator(document: dict[str, Any], name: str) -> Draft202012Validator:
    return Draft202012Validator({**document, "$ref": f"#/components/schemas/{name}"})


def test_the_document_is_served_without_a_key(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/v1/chat/completions",
        "/v1/models",
        "/v1/models/{model_id}",
        "/health",
        "/v1/usage",
        "/admin/keys",
        "/admin/keys/{key_id}",
        "/admin/accounts",
        "/admin/accounts/{name}",
        "/admin/accounts/{name}/topup",
        "/v1/blueprints",
        "/v1/blueprints/{item_id}",
        "/v1/skills",
        "/v1/skills/{item_id}",
        "/v1/vault/rotate",
    }
    request = document["components"]["schemas"]["ChatCompletionRequest"]
    assert request["properties"]["messages"]["maxItems"] == 2048  # [limits] written in
    assert request["properties"]["model"]["examples"] == [MODEL]


def test_real_answers_match_the_document(
    gateway: GatewayProcess, api_key: str, document: dict[str, Any]
) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    url = gateway.base_url
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    validator(document, "ChatCompletionRequest").validate(body)
    answers = {
        "ChatCompletion": httpx.post(
            f"{url}/v1/chat/completions", json=body, headers=auth, timeout=60
        ),
        "ModelList": httpx.get(f"{url}/v1/models?include_meta=true", headers=auth),
        "Model": httpx.get(f"{url}/v1/models/{MODEL}", headers=auth),
        "Health": httpx.get(f"{url}/health"),
        "Error": httpx.post(f"{url}/v1/chat/completions", json={**body, "n": 11}, headers=auth),
    }
    for name, response in answers.items():
        assert response.status_code == (400 if name == "Error" else 200), response.text
        validator(document, name).validate(response.json())


def fuzz(
    case_strategy: Any, examples: int, prepare: Callable[[Case], None] | None, checks: list[Any]
) -> Callable[[str, str], None]:
    """A bounded, reproducible schemathesis run over one operation."""

    def run(base_url: str, key: str) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=case_strategy)
        def one(case: Case) -> None:
            if prepare is not None:
                prepare(case)
            response = case.call(
                base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            )
            case.validate_response(response, checks=checks)

        one()

    return run


def runnable(case: Case) -> None:
    """A valid body, made cheap to answer: the embedded model, one choice of two tokens at most."""
    if isinstance(case.body, dict):
        case.body.pop("max_completion_tokens", None)
        case.body.pop("n", None)
        case.body.update(model=MODEL, max_tokens=2)


@pytest.fixture(scope="module")
def schema(gateway: GatewayProcess, document: dict[str, Any]) -> Any:
    assert gateway.base_url.startswith("http://127.0.0.1:")  # never anywhere else
    return schemathesis.openapi.from_dict(document)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("path", "method", "mode", "examples"),
    [
        ("/v1/chat/completions", "POST", GenerationMode.POSITIVE, 60),
        ("/v1/chat/completions", "POST", GenerationMode.NEGATIVE, 60),
        ("/v1/models", "GET", GenerationMode.POSITIVE, 15),
        ("/v1/models", "GET", GenerationMode.NEGATIVE, 15),
        ("/v1/models/{model_id}", "GET", GenerationMode.POSITIVE, 25),
        ("/v1/models/{model_id}", "GET", GenerationMode.NEGATIVE, 15),
        ("/health", "GET", GenerationMode.POSITIVE, 5),
    ],
    ids=lambda value: getattr(value, "value", str(value)),
)
def test_schemathesis(
    gateway: GatewayProcess,
    api_key: str,
    schema: Any,
    path: str,
    method: str,
    mode: GenerationMode,
    examples: int,
) -> None:
    operation = schema[path][method]
    positive = mode is GenerationMode.POSITIVE
    prepare = runnable if positive and path == "/v1/chat/completions" else None
    checks = CHECKS if positive else [*CHECKS, negative_data_rejection]
    fuzz(operation.as_strategy(generation_mode=mode), examples, prepare, checks)(
        gateway.base_url, api_key
    )


def test_no_fuzzed_request_ended_in_a_server_error(gateway: GatewayProcess) -> None:
    """Runs last: the gateway logged no 500 and no traceback for anything schemathesis sent."""
    log = gateway.log()
    assert '"status":500' not in log.replace(" ", "")
    assert "Traceback" not in log
