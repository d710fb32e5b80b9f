"""Every error code a client can provoke, over raw HTTP and through the `openai` SDK's exceptions."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.harness import GatewayProcess, assert_schema

MODEL = "smollm2-135m"
HELLO = [{"role": "user", "content": "Hi"}]
BASE: dict[str, Any] = {"model": MODEL, "messages": HELLO, "max_tokens": 1}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
# Labels pydantic puts in a location for a union member; a client-facing path never shows one.
_UNION_LABELS = {"str", "int", "float", "bool", "dict", "list", "none"}
_UNION_LABELS |= {"system", "developer", "user", "assistant", "tool"}
_PARAM = re.compile(r"^[a-z_]+(\[\d+\]|\.[a-z_]+)*$")


@pytest.fixture(scope="module")
def headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture(scope="module")
def models_key(gateway: GatewayProcess) -> str:
    return gateway.create_key(account="scoped", scopes="inference.models")


@pytest.fixture(scope="module")
def chat_key(gateway: GatewayProcess) -> str:
    return gateway.create_key(account="scoped", scopes="inference.chat")


def post(
    gateway: GatewayProcess,
    body: Any = None,
    *,
    headers: dict[str, str],
    content: bytes | None = None,
) -> httpx.Response:
    url = f"{gateway.base_url}/v1/chat/completions"
    if content is not None:
        return httpx.post(url, headers=headers, content=content, timeout=60)
    return httpx.post(url, headers=headers, json=body, timeout=60)


def assert_error(
    response: httpx.Response, status: int, code: str, type_: str, param: str | None
) -> dict[str, Any]:
    """Check the catalog shape of an error answer; returns its `error` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]
    body = response.json()
    assert_schema("ErrorResponse", body)
    error = body["error"]
    assert (error["code"], error["type"], error["param"]) == (code, type_, param), error
    assert error["message"] and isinstance(error["details"], dict)
    if param is not None:
        assert _PARAM.match(param), param
        assert not {part for part in re.split(r"[.\[\]]", param)} & _UNION_LABELS, param
    return dict(error)


# --- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}, {"x-api-key": ""}],
    ids=["no-header", "basic-scheme", "bearer-without-key", "empty-x-api-key"],
)
def test_no_key_is_auth_1007(gateway: GatewayProcess, auth: dict[str, str]) -> None:
    error = assert_error(
        post(gateway, BASE, headers=auth), 401, "AUTH_1007", "authentication_error", None
    )
    assert error["details"] == {}


@pytest.mark.parametrize("header", ["Authorization", "x-api-key"])
def test_unknown_key_is_auth_1008(gateway: GatewayProcess, header: str) -> None:
    key = "sk-mel-" + "x" * 128
    value = f"Bearer {key}" if header == "Authorization" else key
    response = post(gateway, BASE, headers={header: value})
    error = assert_error(response, 401, "AUTH_1008", "authentication_error", None)
    assert key not in response.text and error["details"] == {}


def test_revoked_key_is_refused_within_the_cache_bound(gateway: GatewayProcess) -> None:
    key = gateway.create_key(account="revocation")
    url = f"{gateway.base_url}/v1/models"
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.get(url, headers=auth).status_code == 200
    listing = gateway.cli("keys", "list").stdout.splitlines()
    [key_id] = [line.split()[0] for line in listing if f"...{key[-4:]}" in line]
    assert gateway.cli("keys", "revoke", key_id).returncode == 0
    # Revoked by another process (the CLI): refused once the server's 1 s key cache lapses.
    revoked_at = time.monotonic()
    while httpx.get(url, headers=auth).status_code == 200:
        assert time.monotonic() - revoked_at < 1.2, "a revoked key outlived the 1 s bound"
        time.sleep(0.05)
    assert_error(httpx.get(url, headers=auth), 401, "AUTH_1008", "authentication_error", None)


def test_missing_scope_is_auth_1015(gateway: GatewayProcess, models_key: str) -> None:
    response = post(gateway, BASE, headers={"Authorization": f"Bearer {models_key}"})
    error = assert_error(response, 403, "AUTH_1015", "permission_error", None)
    assert error["details"]["required_scope"] == "inference.chat"
    # The same key does what its scope allows.
    models = httpx.get(
        f"{gateway.base_url}/v1/models", headers={"Authorization": f"Bearer {models_key}"}
    )
    assert models.status_code == 200


def test_chat_scope_does_not_list_models(gateway: GatewayProcess, chat_key: str) -> None:
    response = httpx.get(
        f"{gateway.base_url}/v1/models", headers={"Authorization": f"Bearer {chat_key}"}
    )
    error = assert_error(response, 403, "AUTH_1015", "permission_error", None)
    assert error["details"]["required_scope"] == "inference.models"
    assert post(gateway, BASE, headers={"Authorization": f"Bearer {chat_key}"}).status_code == 200


@pytest.mark.parametrize("scopes", ["inference.*", "*", "inference.models,inference.chat"])
def test_wider_scopes_allow_chat(gateway: GatewayProcess, scopes: str) -> None:
    key = gateway.create_key(account="scoped", scopes=scopes)
    response = post(gateway, BASE, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text


# --- validation -----------------------------------------------------------------------------------

# (request fields over BASE, or None to delete a field; HTTP status, code, param)
VALIDATION_CASES: dict[str, tuple[dict[str, Any], str, str | None]] = {
    "model-missing": ({"model": None}, "VALIDATION_4002", "model"),
    "messages-missing": ({"messages": None}, "VALIDATION_4002", "messages"),
    "messages-empty": ({"messages": []}, "VALIDATION_4002", "messages"),
    "model-empty": ({"model": ""}, "VALIDATION_4002", "model"),
    "temperature-string": ({"temperature": "hot"}, "VALIDATION_4003", "temperature"),
    "n-float": ({"n": 1.5}, "VALIDATION_4003", "n"),
    "n-bool": ({"n": True}, "VALIDATION_4003", "n"),
    "stream-string": ({"stream": "yes"}, "VALIDATION_4003", "stream"),
    "messages-not-list": ({"messages": "Hi"}, "VALIDATION_4003", "messages"),
    "message-not-object": ({"messages": ["Hi"]}, "VALIDATION_4003", "messages[0]"),
    "content-number": (
        {"messages": [{"role": "user", "content": 5}]},
        "VALIDATION_4003",
        "messages[0].content",
    ),
    "stop-item-number": ({"stop": ["a", 1]}, "VALIDATION_4003", "stop[1]"),
    "temperature-2.5": ({"temperature": 2.5}, "VALIDATION_4004", "temperature"),
    "top-p-1.1": ({"top_p": 1.1}, "VALIDATION_4004", "top_p"),
    "n-11": ({"n": 11}, "VALIDATION_4004", "n"),
    "top-logprobs-21": ({"logprobs": True, "top_logprobs": 21}, "VALIDATION_4004", "top_logprobs"),
    "frequency-penalty--3": ({"frequency_penalty": -3}, "VALIDATION_4004", "frequency_penalty"),
    "presence-penalty-2.5": ({"presence_penalty": 2.5}, "VALIDATION_4004", "presence_penalty"),
    "max-tokens-0": ({"max_tokens": 0}, "VALIDATION_4004", "max_tokens"),
    "max-tokens-beyond-int64": ({"max_tokens": 10**20}, "VALIDATION_4004", "max_tokens"),
    "seed-beyond-int64": ({"seed": 2**70}, "VALIDATION_4004", "seed"),
    "stop-5-entries": ({"stop": ["a", "b", "c", "d", "e"]}, "VALIDATION_4101", "stop"),
    "bad-role": (
        {"messages": [{"role": "bot", "content": "Hi"}]},
        "VALIDATION_4005",
        "messages[0].role",
    ),
    "reasoning-effort-extreme": (
        {"reasoning_effort": "extreme"},
        "VALIDATION_4005",
        "reasoning_effort",
    ),
    "tool-choice-unknown-function": (
        {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "VALIDATION_4005",
        "tool_choice",
    ),
    "tool-choice-word": ({"tool_choice": "sometimes"}, "VALIDATION_4005", "tool_choice"),
    "stream-options-without-stream": (
        {"stream_options": {"include_usage": True}},
        "VALIDATION_4005",
        "stream_options",
    ),
    "top-logprobs-without-logprobs": ({"top_logprobs": 2}, "VALIDATION_4005", "top_logprobs"),
    "invalid-json-schema": (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "nonsense"}},
            }
        },
        "VALIDATION_4005",
        "response_format.json_schema.schema",
    ),
    "response-format-yaml": (
        {"response_format": {"type": "yaml"}},
        "VALIDATION_4005",
        "response_format.type",
    ),
    "content-part-type": (
        {"messages": [{"role": "user", "content": [{"type": "video", "text": "x"}]}]},
        "VALIDATION_4005",
        "messages[0].content[0].type",
    ),
    "tool-message-without-tool-call-id": (
        {"messages": [*HELLO, {"role": "tool", "content": "{}"}]},
        "VALIDATION_4006",
        "messages[1].tool_call_id",
    ),
    "assistant-without-content-or-tool-calls": (
        {"messages": [*HELLO, {"role": "assistant"}]},
        "VALIDATION_4006",
        "messages[1].content",
    ),
    "message-without-role": (
        {"messages": [{"content": "Hi"}]},
        "VALIDATION_4006",
        "messages[0].role",
    ),
    "text-part-without-text": (
        {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "VALIDATION_4006",
        "messages[0].content[0].text",
    ),
    "tool-call-without-arguments": (
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}],
                }
            ]
        },
        "VALIDATION_4006",
        "messages[0].tool_calls[0].function.arguments",
    ),
    "custom-tool-without-name": (
        {"tools": [{"type": "custom", "custom": {"description": "free-form"}}]},
        "VALIDATION_4006",
        "tools[0].custom.name",
    ),
    "custom-call-without-input": (
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c1", "type": "custom", "custom": {"name": "sql"}}],
                }
            ]
        },
        "VALIDATION_4006",
        "messages[0].tool_calls[0].custom.input",
    ),
    "unknown-parameter": ({"frobnicate": 1}, "VALIDATION_4007", "frobnicate"),
    "unknown-message-field": (
        {"messages": [{"role": "user", "content": "Hi", "mood": "happy"}]},
        "VALIDATION_4007",
        "messages[0].mood",
    ),
}


@pytest.mark.parametrize("case", list(VALIDATION_CASES), ids=list(VALIDATION_CASES))
def test_validation_errors(gateway: GatewayProcess, headers: dict[str, str], case: str) -> None:
    fields, code, param = VALIDATION_CASES[case]
    body = {**BASE, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    error = assert_error(
        post(gateway, body, headers=headers), 400, code, "invalid_request_error", param
    )
    assert error["details"]["parameter"] == param
    if code == "VALIDATION_4004":
        assert error["details"]["constraint"]
    if code == "VALIDATION_4008":
        assert "not supported yet" in error["message"]


@pytest.mark.parametrize(
    "content", [b"not json", b"[1, 2]", b"", b"null", b'"text"', b"{", b"\xff\xfe"]
)
def test_body_that_is_not_a_json_object(
    gateway: GatewayProcess, headers: dict[str, str], content: bytes
) -> None:
    response = post(
        gateway, headers={**headers, "Content-Type": "application/json"}, content=content
    )
    error = assert_error(response, 400, "VALIDATION_4001", "invalid_request_error", None)
    assert error["details"] == ({"reason": "not UTF-8"} if content == b"\xff\xfe" else {})


# --- model and context ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["no-such-model", "no-such-model:eco", f"{MODEL}:turbo"])
def test_unknown_model_is_inference_3001(
    gateway: GatewayProcess, headers: dict[str, str], model: str
) -> None:
    response = post(gateway, {**BASE, "model": model}, headers=headers)
    error = assert_error(response, 404, "INFERENCE_3001", "not_found_error", "model")
    assert error["details"]["model"] == model
    assert "eco" in error["details"]["valid_flavors"]


def test_flavor_suffix_is_accepted(gateway: GatewayProcess, headers: dict[str, str]) -> None:
    response = post(gateway, {**BASE, "model": f"{MODEL}:eco"}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == f"{MODEL}:eco"


def test_prompt_longer_than_the_context(gateway: GatewayProcess, headers: dict[str, str]) -> None:
    long = [{"role": "user", "content": "harbour " * 9000}]
    response = post(gateway, {**BASE, "messages": long}, headers=headers)
    error = assert_error(response, 400, "INFERENCE_3207", "invalid_request_error", "messages")
    assert error["details"]["context_length"] == 8192
    assert error["details"]["input_tokens"] > 8192


def test_max_tokens_beyond_the_context(gateway: GatewayProcess, headers: dict[str, str]) -> None:
    response = post(gateway, {**BASE, "max_tokens": 9000}, headers=headers)
    error = assert_error(response, 400, "INFERENCE_3207", "invalid_request_error", "messages")
    assert error["details"]["context_length"] == 8192
    assert 0 < error["details"]["input_tokens"] < 100


# --- the HTTP edge --------------------------------------------------------------------------------


def test_unknown_path_is_404_in_the_catalog_shape(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.base_url}/v1/no-such-endpoint")
    assert_error(response, 404, "VALIDATION_4040", "not_found_error", None)


def test_wrong_method_is_405_in_the_catalog_shape(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.base_url}/v1/chat/completions")
    assert_error(response, 405, "VALIDATION_4050", "invalid_request_error", None)


# --- through the openai SDK -----------------------------------------------------------------------


def _sdk(gateway: GatewayProcess, key: str) -> OpenAI:
    return OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0, timeout=60)


def test_sdk_authentication_error(gateway: GatewayProcess) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        _sdk(gateway, "sk-mel-wrong").chat.completions.create(model=MODEL, messages=HELLO)
    exc = caught.value
    assert (exc.status_code, exc.code, exc.type, exc.param) == (
        401,
        "AUTH_1008",
        "authentication_error",
        None,
    )
    assert exc.request_id or exc.response.headers["x-request-id"]


def test_sdk_permission_denied(gateway: GatewayProcess, models_key: str) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        _sdk(gateway, models_key).chat.completions.create(model=MODEL, messages=HELLO)
    exc = caught.value
    assert (exc.status_code, exc.code, exc.type) == (403, "AUTH_1015", "permission_error")
    assert isinstance(exc.body, dict) and exc.body["details"]["required_scope"] == "inference.chat"


def test_sdk_bad_request(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO, temperature=2.5)
    exc = caught.value
    assert (exc.status_code, exc.code, exc.type, exc.param) == (
        400,
        "VALIDATION_4004",
        "invalid_request_error",
        "temperature",
    )
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model=MODEL, messages=HELLO, extra_body={"frobnicate": 1})
    assert (unknown.value.code, unknown.value.param) == ("VALIDATION_4007", "frobnicate")


def test_sdk_not_found(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    exc = caught.value
    assert (exc.status_code, exc.code, exc.type, exc.param) == (
        404,
        "INFERENCE_3001",
        "not_found_error",
        "model",
    )
    with pytest.raises(openai.NotFoundError) as retrieved:
        client.models.retrieve("no-such-model")
    assert retrieved.value.code == "INFERENCE_3001"


def test_no_request_ended_in_a_server_error(gateway: GatewayProcess) -> None:
    """Runs last: nothing the module sent was answered with a 500 or logged a traceback."""
    log = gateway.log()
    assert '"status":500' not in log.replace(" ", "")
    assert "Traceback" not in log and "unexpected failure" not in log
