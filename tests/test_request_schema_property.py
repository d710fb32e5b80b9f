"""Every request OpenAI's published schema accepts is accepted here: generated from
`CreateChatCompletionRequest` (tests/data/openai-chat-schemas.json) with hypothesis.

What "accepted" means: the request parses and converts (`parse_chat_request`, `check_limits`,
`to_inference_request`), or it is refused for a reason docs/parameters.md lists; a schema-valid request
never gets VALIDATION_4003, 4005, 4006 or 4007 (a parse refusal). Allowed refusals:

- VALIDATION_4004 for the ranges Hanse keeps narrower than the schema (`NARROWER`);
- VALIDATION_4101 for the configured `[limits]`.

Audio and file parts, custom tools and audio output all convert: a model without the capability
refuses them later (INFERENCE_32xx, tests/test_audio_file_custom.py); the live model has them all.

The generator (`strategy`: a small JSON Schema -> hypothesis translation of what the schema uses, since
hypothesis-jsonschema 0.23 fails on hypothesis 6.170's internals) works on a *closed* copy of the schema:
OpenAI's objects do not say `additionalProperties: false`, yet OpenAI refuses unknown parameters as Hanse
does, so unknown keys are not generated. Three rules that OpenAI states in descriptions are written in (`_overlay`): function and
response-format names match `^[a-zA-Z0-9_-]{1,64}$`; tool parameters and response schemas are JSON
Schemas of an object; `allowed_tools` entries are tool references. A generated request is then made
consistent where OpenAI, like Hanse, refuses a combination (`_consistent`), and checked again against
the official schema, unchanged, so only schema-valid requests are tried. A smaller sample (30, or
`HANSE_TEST_LIVE_EXAMPLES`) goes, as generated, to a live gateway with one scripted upstream behind it.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from hanse.config.limits import LimitsConfig
from hanse.domain import InferenceRequest
from hanse.errors import HanseError
from hanse.limits import check_limits
from hanse.wire.convert import to_inference_request
from hanse.wire.request import parse_chat_request
from tests.harness import GatewayProcess
from tests.upstream import ScriptedUpstream

_DOCUMENT = json.loads((Path(__file__).parent / "data" / "openai-chat-schemas.json").read_text())
_SCHEMAS: dict[str, Any] = _DOCUMENT["components"]["schemas"]
OFFICIAL = Draft202012Validator(
    {**_DOCUMENT, "$ref": "#/components/schemas/CreateChatCompletionRequest"}
)
NAME = "^[a-zA-Z0-9_-]{1,64}$"
# Parameters whose range Hanse keeps narrower than the schema (VALIDATION_4004, docs/parameters.md).
NARROWER = {"n", "max_tokens", "max_completion_tokens", "seed", "user", "model"}
SMALL_SCHEMAS = [
    {"type": "object"},
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}},
]


def _resolve(node: Any) -> Any:
    """The schema with every `$ref` inlined (the document has no recursive references)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = _SCHEMAS[node["$ref"].rsplit("/", 1)[1]]
            rest = {k: v for k, v in node.items() if k not in ("$ref", "description")}
            return _resolve({**target, **rest})
        # `format: uri` is not checked by Hanse's parser; `discriminator` is OpenAPI, not JSON Schema.
        dropped = {"discriminator"} | ({"format"} if isinstance(node.get("format"), str) else set())
        return {k: _resolve(v) for k, v in node.items() if k not in dropped}
    if isinstance(node, list):
        return [_resolve(item) for item in node]
    return node


def _merge_all_of(node: dict[str, Any]) -> dict[str, Any]:
    """One object schema for an `allOf` of object schemas; a property named twice gets both."""
    merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    for part in node["allOf"]:
        part = _merge_all_of(part) if "allOf" in part else part
        for name, schema in part.get("properties", {}).items():
            known = merged["properties"].get(name)
            merged["properties"][name] = schema if known is None else {"allOf": [known, schema]}
        merged["required"] += [r for r in part.get("required", []) if r not in merged["required"]]
    return merged


def _close(node: Any) -> Any:
    """No unknown keys: an object schema listing its properties admits only those."""
    if isinstance(node, dict):
        node = {k: _close(v) for k, v in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_close(item) for item in node]
    return node


def _overlay(request: dict[str, Any]) -> dict[str, Any]:
    """The rules OpenAI states in descriptions and enforces, written into the generator's schema."""
    props = request["properties"]
    tool = props["tools"]["items"]["oneOf"][0]["properties"]["function"]
    tool["properties"]["name"] = {"type": "string", "pattern": NAME}
    tool["properties"]["parameters"] = {"enum": SMALL_SCHEMAS}
    for branch in props["response_format"]["oneOf"]:
        spec = branch["properties"].get("json_schema")
        if spec is not None:
            spec["properties"]["name"] = {"type": "string", "pattern": NAME}
            spec["properties"]["schema"] = {"enum": SMALL_SCHEMAS}
    for branch in props["tool_choice"]["oneOf"]:
        allowed = branch.get("properties", {}).get("allowed_tools")
        if allowed is not None:
            allowed["properties"]["tools"]["items"] = _SCHEMA_NAMED_FUNCTION
    functions = props["functions"]["items"]["properties"]
    functions["parameters"] = {"enum": SMALL_SCHEMAS}
    # `model: ""` is VALIDATION_4002 (as good as missing, the reference page says): tested once,
    # in tests/test_errors.py, rather than in a third of the examples.
    props["model"] = {"type": "string", "minLength": 1, "maxLength": 40}
    # Short strings and lists keep examples small; lengths are not what is being tested.
    props["messages"]["maxItems"] = 6
    props["tools"]["maxItems"] = 4
    return request


_SCHEMA_NAMED_FUNCTION = _close(
    _resolve({"$ref": "#/components/schemas/ChatCompletionNamedToolChoice"})
)


def generator_schema() -> dict[str, Any]:
    request = _merge_all_of(_resolve(copy.deepcopy(_SCHEMAS["CreateChatCompletionRequest"])))
    return _overlay(_close(request))


def _consistent(request: dict[str, Any]) -> dict[str, Any]:
    """The request, made consistent where OpenAI (as Hanse) refuses a schema-valid combination."""
    request = copy.deepcopy(request)
    if isinstance(
        request.get("logit_bias"), dict
    ):  # token ids -> [-100, 100], as OpenAI's text says
        request["logit_bias"] = {
            str(index): max(-100, min(100, bias))
            for index, bias in enumerate(request["logit_bias"].values())
        }
    functions = request.get("functions") or []
    if functions and (request.get("tools") or "tool_choice" in request):
        request.pop("functions")  # one form or the other, as OpenAI takes them
        functions = []
    for index, function in enumerate(functions):  # names unique, as tools' are
        function["name"] = f"{function['name'][:60]}_{index}"
    call = request.get("function_call")
    if call is not None and (
        not functions
        or (isinstance(call, dict) and call.get("name") not in {f["name"] for f in functions})
    ):
        request.pop("function_call")
    tools = request.get("tools") or []
    seen: set[str] = set()
    kinds: dict[str, list[str]] = {"function": [], "custom": []}
    for index, tool in enumerate(tools):  # tool names are unique, function and custom together
        fields = tool[tool["type"]]
        if fields["name"] in seen:
            fields["name"] = f"{fields['name'][:60]}_{index}"
        seen.add(fields["name"])
        kinds[tool["type"]].append(fields["name"])
    names = sorted(kinds["function"])
    choice = request.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in kinds:  # names a tool of its kind
        if kinds[choice["type"]]:
            choice[choice["type"]]["name"] = sorted(kinds[choice["type"]])[0]
        else:
            request["tool_choice"] = "auto"
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        choice["allowed_tools"]["tools"] = [
            {"type": "function", "function": {"name": name}} for name in names[:1]
        ]
    if request.get("tool_choice") == "required" and not seen:
        request["tool_choice"] = "auto"
    if "audio" in (request.get("modalities") or []) and not request.get("audio"):
        request["audio"] = {"voice": "alloy", "format": "wav"}  # audio output needs its voice
    if request.get("stream_options") is not None and not request.get("stream"):
        request["stream"] = True  # stream_options only with stream
    if request.get("top_logprobs") is not None:
        request["logprobs"] = True  # top_logprobs needs logprobs
    if request.get("max_tokens") is not None and request.get("max_completion_tokens") is not None:
        request["max_completion_tokens"] = request["max_tokens"]  # set one, or both equal
    for message in request["messages"]:  # an assistant turn says something
        said = message.get("tool_calls") or message.get("function_call") or message.get("refusal")
        if message["role"] == "assistant" and message.get("content") is None and not said:
            message["content"] = ""
    return request


def is_allowed_refusal(error: HanseError) -> bool:
    """Whether the refusal of a schema-valid request is one docs/parameters.md lists: a narrower
    range or a configured limit."""
    root = (error.param or "").split("[")[0].split(".")[0]
    code = error.error.code
    if code == "VALIDATION_4004":
        return root in NARROWER
    return code == "VALIDATION_4101"


def refusal(request: dict[str, Any]) -> HanseError | None:
    """The catalog error converting `request` raises, if any; a converted one is checked whole."""
    try:
        assert_provider_ready(convert(request))
    except HanseError as exc:
        return exc
    return None


def strategy(schema: Any) -> st.SearchStrategy[Any]:
    """Values valid against `schema` (resolved: no `$ref`), kept small."""
    if schema is True or schema == {}:
        return st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _matching(schema, st.one_of([strategy(branch) for branch in schema[key]]))
    if "allOf" in schema:
        return _matching(schema, strategy(schema["allOf"][-1]))
    types = schema.get("type", "object")
    if isinstance(types, list):
        return st.one_of([strategy({**schema, "type": kind}) for kind in types])
    return _BY_TYPE[types](schema)


def _matching(schema: dict[str, Any], values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    validator = Draft202012Validator(schema)
    return values.filter(validator.is_valid)


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True)
    low = schema.get("minLength", 0)
    return st.text(min_size=low, max_size=max(low, min(schema.get("maxLength", 12), 12)))


def _integer(schema: dict[str, Any]) -> st.SearchStrategy[int]:
    low, high = schema.get("minimum"), schema.get("maximum")
    return st.integers(None if low is None else int(low), None if high is None else int(high))


def _number(schema: dict[str, Any]) -> st.SearchStrategy[float]:
    return st.floats(
        schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False
    )


def _array(schema: dict[str, Any]) -> st.SearchStrategy[list[Any]]:
    low = schema.get("minItems", 0)
    high = min(schema.get("maxItems", low + 3), low + 3)
    return st.lists(strategy(schema.get("items", True)), min_size=low, max_size=high)


def _object(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        values = schema.get("additionalProperties", True)
        return st.dictionaries(st.text(max_size=6), strategy(values), max_size=3)
    required = set(schema.get("required", []))
    return st.fixed_dictionaries(
        {name: strategy(properties[name]) for name in properties if name in required},
        optional={name: strategy(sub) for name, sub in properties.items() if name not in required},
    )


_BY_TYPE: dict[str, Callable[[dict[str, Any]], st.SearchStrategy[Any]]] = {
    "string": _string,
    "integer": _integer,
    "number": _number,
    "boolean": lambda _: st.booleans(),
    "null": lambda _: st.none(),
    "array": _array,
    "object": _object,
}


def requests() -> st.SearchStrategy[dict[str, Any]]:
    return strategy(generator_schema()).map(_consistent)


def convert(request: dict[str, Any]) -> InferenceRequest:
    """Parse, check and convert `request` as the pipeline does, once it is known schema-valid."""
    errors = sorted(OFFICIAL.iter_errors(request), key=str)
    assert not errors, errors[0]
    wire = parse_chat_request(json.dumps(request).encode())
    check_limits(wire, LimitsConfig())
    return to_inference_request(wire, "m")


# Keys that are read and dropped: a provider never sees them (docs/parameters.md).
_DROPPED = {"annotations", "audio", "function_call", "prompt_cache_breakpoint"}


def assert_provider_ready(request: InferenceRequest) -> None:
    """What providers get: current roles only, dropped keys gone, tool results in OpenAI's shape."""
    for message in request.messages:
        assert message["role"] in {"system", "developer", "user", "assistant", "tool"}, message
        assert not _DROPPED & set(message), message
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            assert "prompt_cache_breakpoint" not in part, part
        if message["role"] == "tool":
            assert set(message) == {"role", "content", "tool_call_id"}, message
    assert "" not in request.stop


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
@given(request=requests())
def test_every_schema_valid_request_parses(request: dict[str, Any]) -> None:
    error = refusal(request)
    assert error is None or is_allowed_refusal(error), (error, error and error.param, request)


# --- a live sample --------------------------------------------------------------------------------

LIVE_MODEL = "up"
LIVE_EXAMPLES = int(os.environ.get("HANSE_TEST_LIVE_EXAMPLES", "30"))
CATALOG = """
[[providers]]
id = "up"
kind = "openai_compatible"
base_url = "{base_url}"

[[models]]
id = "up"
context_length = 4096
[models.capabilities]
function_calling = true
vision = true
structured_output = true
json_schema = true
audio_input = true
file_input = true
custom_tools = true
audio_output = true
[[models.routes]]
provider = "up"
upstream_model = "ok"
"""
# A parse refusal: what a schema-valid request must never get.
PARSE_REFUSALS = {
    "VALIDATION_4001",
    "VALIDATION_4003",
    "VALIDATION_4005",
    "VALIDATION_4006",
    "VALIDATION_4007",
}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[GatewayProcess]:
    workdir = Path(tmp_path_factory.mktemp("schema-property"))
    process = GatewayProcess(workdir, config=CATALOG.format(base_url=upstream.base_url)).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def headers(gateway: GatewayProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway.create_key()}"}


def test_a_live_sample_is_accepted(gateway: GatewayProcess, headers: dict[str, str]) -> None:
    """Schema-valid requests, sent as they are (model aside): served, or refused for a listed reason."""
    answered: list[int] = []

    @settings(
        max_examples=LIVE_EXAMPLES,
        deadline=None,
        derandomize=True,  # the same sample every run: CI cannot fail on a new draw unseen
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=requests())
    def send(request: dict[str, Any]) -> None:
        body = {**request, "model": LIVE_MODEL}
        response = httpx.post(
            f"{gateway.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30
        )
        answered.append(response.status_code)
        asked_format = (body.get("response_format") or {}).get("type", "text")
        if response.status_code == 502 and asked_format != "text":
            # The scripted upstream answers prose whatever schema it is said to enforce: the
            # gateway's check after generation refuses that, as it should.
            assert response.json()["error"]["code"] == "INFERENCE_3209", response.text
            return
        assert response.status_code < 500, response.text
        if response.status_code != 200:
            error = response.json()["error"]
            assert error["code"] not in PARSE_REFUSALS, (error, body)
            if error["code"] == "VALIDATION_4004":
                root = (error["param"] or "").split("[")[0].split(".")[0]
                assert root in NARROWER, (error, body)
            assert error["code"] != "VALIDATION_4008", (error, body)

    send()
    assert 200 in answered, answered  # some were served, not all refused
