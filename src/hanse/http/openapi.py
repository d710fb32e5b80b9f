"""The OpenAPI 3.1 document served at /openapi.json: the client API as this server accepts it.

The chat request's schema is generated from the wire model itself (so it cannot drift from what is
parsed), with this catalog's `[limits]` written in; the answers are described by hand, and the test
suite checks real answers against them (and runs schemathesis over the whole document).
"""

from __future__ import annotations

from typing import Any

from hanse import __version__
from hanse.blueprints.models import Blueprint, Skill
from hanse.config.schema import Catalog
from hanse.http.admin import AccountCreate, AccountPatch, KeyCreate, TopUp
from hanse.http.vault import RotateBody
from hanse.wire.request import ChatCompletionRequest

_REF = "#/components/schemas/{model}"
_NULLABLE_STRING = {"type": ["string", "null"]}
_ERROR_STATUSES = {
    "400": "Invalid request (VALIDATION_4xxx, INFERENCE_32xx)",
    "401": "No key, or an invalid one (AUTH_1007, AUTH_1008)",
    "402": "Not enough energy or credits (BILLING_2001, BILLING_2003)",
    "403": "The key lacks the scope (AUTH_1015), or the vault key is wrong (AUTH_1031)",
    "404": "Unknown model or path (INFERENCE_3001, VALIDATION_4040)",
    "413": "The body is over `[limits] max_body_bytes` (VALIDATION_4130)",
    "429": "A rate limit: the account's (AUTH_1028), wrong vault keys' (AUTH_1032), or every "
    "route's (INFERENCE_3108)",
    "502": "Every route failed, or the answer missed its schema (INFERENCE_3103, INFERENCE_3209)",
    "503": "No route matches the request (INFERENCE_3104)",
    "504": "The provider timed out (INFERENCE_3107)",
}


def openapi_document(catalog: Catalog) -> dict[str, Any]:
    """The document for a gateway serving `catalog`."""
    request = ChatCompletionRequest.model_json_schema(ref_template=_REF)
    schemas: dict[str, Any] = request.pop("$defs", {})
    _write_limits(request, catalog)
    schemas.update(ChatCompletionRequest=request, **_answers())
    for body in (KeyCreate, AccountCreate, AccountPatch, TopUp, RotateBody, Blueprint, Skill):
        shape = body.model_json_schema(ref_template=_REF)
        schemas.update(shape.pop("$defs", {}))
        schemas[body.__name__] = shape
    bearer: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
    models_query = [_include_meta()]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Hanse", "version": __version__},
        "paths": {
            "/v1/chat/completions": {
                "post": {
                    "operationId": "createChatCompletion",
                    "security": bearer,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ChatCompletionRequest")}},
                    },
                    "responses": {
                        "200": {
                            "description": "The answer, or its SSE stream when `stream` is true",
                            "content": {
                                "application/json": {"schema": _ref("ChatCompletion")},
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(*_ERROR_STATUSES),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "security": bearer,
                    "parameters": models_query,
                    "responses": {
                        "200": _json("The catalog's models", "ModelList"),
                        **_errors("400", "401", "403"),
                    },
                }
            },
            "/v1/models/{model_id}": {
                "get": {
                    "operationId": "retrieveModel",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "model_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1},
                        },
                        *models_query,
                    ],
                    "responses": {
                        "200": _json("One model", "Model"),
                        **_errors("400", "401", "403", "404"),
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "security": [],
                    "responses": {"200": _json("The process is up", "Health")},
                }
            },
            "/v1/usage": {
                "get": {
                    "operationId": "usage",
                    "security": bearer,
                    "parameters": [
                        _query("start", "ISO 8601 time or unix seconds"),
                        _query("end", "ISO 8601 time or unix seconds"),
                        _query("model", "a catalog model id"),
                    ],
                    "responses": {"200": _any("The account's usage"), **_errors("400", "401")},
                }
            },
            **_admin_paths(),
            **_vault_paths(bearer),
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }


def _admin_paths() -> dict[str, Any]:
    """`/admin/...`, behind `HANSE_ADMIN_TOKEN` (a bearer token)."""
    admin: list[dict[str, list[str]]] = [{"bearer": []}]
    statuses = ("400", "401", "404", "413")

    def operation(op_id: str, body: str | None = None, **extra: Any) -> dict[str, Any]:
        found = {"security": admin, "operationId": op_id, **extra}
        found["responses"] = {"200": _any("Done"), "201": _any("Created"), **_errors(*statuses)}
        if body is not None:
            found["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": _ref(body)}},
            }
        return found

    name = [_path_param("name")]
    return {
        "/admin/keys": {
            "post": operation("createKey", "KeyCreate"),
            "get": operation("listKeys"),
        },
        "/admin/keys/{key_id}": {
            "delete": operation("revokeKey", parameters=[_path_param("key_id")])
        },
        "/admin/accounts": {"post": operation("createAccount", "AccountCreate")},
        "/admin/accounts/{name}": {
            "get": operation("getAccount", parameters=name),
            "patch": operation("patchAccount", "AccountPatch", parameters=name),
        },
        "/admin/accounts/{name}/topup": {
            "post": operation("topUpAccount", "TopUp", parameters=name)
        },
    }


def _vault_paths(security: list[dict[str, list[str]]]) -> dict[str, Any]:
    """Blueprints, skills and rotation; the vault key travels in `X-Vault-Key`."""
    vault_key = {
        "name": "X-Vault-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": 1024},
    }
    statuses = ("400", "401", "403", "404", "413", "429")

    def operation(op_id: str, body: str | None = None, item: bool = False) -> dict[str, Any]:
        found: dict[str, Any] = {
            "operationId": op_id,
            "security": security,
            "parameters": [vault_key, *([_path_param("item_id")] if item else [])],
            "responses": {"200": _any("Done"), "201": _any("Created"), **_errors(*statuses)},
        }
        if body is not None:
            found["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(body)}},
            }
        return found

    paths: dict[str, Any] = {}
    for base, body in (("/v1/blueprints", "Blueprint"), ("/v1/skills", "Skill")):
        word = body.lower()
        paths[base] = {
            "post": operation(f"create_{word}", body),
            "get": operation(f"list_{word}s"),
        }
        paths[base + "/{item_id}"] = {
            "get": operation(f"get_{word}", item=True),
            "put": operation(f"replace_{word}", body, item=True),
            "delete": operation(f"delete_{word}", item=True),
        }
    paths["/v1/vault/rotate"] = {"post": operation("rotateVault", "RotateBody")}
    return paths


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


def _any(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {}}}}


def _write_limits(request: dict[str, Any], catalog: Catalog) -> None:
    limits = catalog.limits
    fields = request["properties"]
    fields["messages"]["maxItems"] = limits.max_messages
    for branch in fields["tools"]["anyOf"]:
        if branch.get("type") == "array":
            branch["maxItems"] = limits.max_tools
    for branch in fields["stop"]["anyOf"]:
        if branch.get("type") == "string":
            branch["maxLength"] = limits.max_stop_chars
        elif branch.get("type") == "array":
            branch["maxItems"] = limits.max_stop_sequences
            branch["items"]["maxLength"] = limits.max_stop_chars
    fields["model"]["examples"] = [model.id for model in catalog.models]


def _include_meta() -> dict[str, Any]:
    return {
        "name": "include_meta",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$"},
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _errors(*statuses: str) -> dict[str, Any]:
    return {status: _json(_ERROR_STATUSES[status], "Error") for status in statuses}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _answers() -> dict[str, Any]:
    """The shapes of the answers, as http/ and wire/response.py build them."""
    tool_call = _object(
        ["id", "type", "function"],
        id={"type": "string"},
        type={"const": "function"},
        function=_object(
            ["name", "arguments"], name={"type": "string"}, arguments={"type": "string"}
        ),
    )
    message = _object(
        ["role", "content"],
        role={"const": "assistant"},
        content=_NULLABLE_STRING,
        refusal=_NULLABLE_STRING,
        tool_calls={"type": "array", "items": tool_call},
    )
    finish = [
        "stop",
        "length",
        "tool_calls",
        "function_call",
        "content_filter",
        "blocked",
        "blueprint_override",
    ]
    choice = _object(
        ["index", "message", "finish_reason"],
        index={"type": "integer", "minimum": 0},
        message=message,
        finish_reason={"enum": finish},
        logprobs={"type": ["object", "null"]},
    )
    count = {"type": "integer", "minimum": 0}
    usage = _object(
        ["prompt_tokens", "completion_tokens", "total_tokens"],
        prompt_tokens=count,
        completion_tokens=count,
        total_tokens=count,
    )
    decimal = {"type": "string", "pattern": r"^\d+(\.\d+)?$"}
    completion = _object(
        ["id", "object", "created", "model", "choices", "usage"],
        id={"type": "string"},
        object={"const": "chat.completion"},
        created={"type": "integer"},
        model={"type": "string"},
        choices={"type": "array", "items": choice},
        usage=usage,
        system_fingerprint=_NULLABLE_STRING,
        billing_cost=_object(
            ["energy", "credits", "paid_with"],
            energy=decimal,
            credits=decimal,
            paid_with={"enum": ["energy", "credits"]},
        ),
        environment_impact=_object(
            ["energy_kwh", "carbon_g_co2", "water_liters", "provider_id", "location"],
            energy_kwh={"type": "number", "minimum": 0},
            carbon_g_co2={"type": "number", "minimum": 0},
            water_liters={"type": "number", "minimum": 0},
            renewable_percent={"type": "number"},
            pue={"type": "number"},
            provider_id={"type": "string"},
            location={"type": "string"},
        ),
    )
    model = _object(
        ["id", "object", "created", "owned_by"],
        id={"type": "string"},
        object={"const": "model"},
        created={"type": "integer"},
        owned_by={"type": "string"},
        _meta={"type": "object"},
    )
    error = _object(
        ["error"],
        error=_object(
            ["code", "message", "details", "type"],
            code={
                "type": "string",
                "pattern": "^(AUTH|BILLING|INFERENCE|VALIDATION|SYSTEM)_\\d{4}$",
            },
            message={"type": "string"},
            details={"type": "object"},
            type={"type": "string"},
            param=_NULLABLE_STRING,
        ),
    )
    return {
        "ChatCompletion": completion,
        "Model": model,
        "ModelList": _object(
            ["object", "data"],
            object={"const": "list"},
            data={"type": "array", "items": _ref("Model")},
        ),
        "Health": _object(["status"], status={"const": "ok"}),
        "Error": error,
    }
