"""Wire request -> provider-neutral `InferenceRequest`, with the checks that span several fields."""

from __future__ import annotations

from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from hanse.domain import InferenceRequest, ProviderPreferences, ResponseFormat
from hanse.errors import (
    INVALID_VALUE,
    MISSING_FIELD,
    MISSING_REQUIRED,
    NOT_SUPPORTED_YET,
    HanseError,
)
from hanse.schema_validation import outside_reference
from hanse.wire.request import (
    NOT_SUPPORTED_YET_FIELDS,
    AssistantMessage,
    ChatCompletionRequest,
    JsonSchemaResponseFormat,
    NamedToolChoice,
)


def require_model(wire: ChatCompletionRequest) -> str:
    """The model the request names (itself or through its blueprint), or VALIDATION_4002."""
    if wire.model is None:
        raise HanseError(
            MISSING_REQUIRED,
            "`model` is required (in the request or its blueprint).",
            param="model",
            details={"parameter": "model"},
        )
    return wire.model


def to_inference_request(wire: ChatCompletionRequest, model_id: str) -> InferenceRequest:
    """The request for catalog model `model_id`, after the cross-field checks."""
    _check(wire)
    stop = [wire.stop] if isinstance(wire.stop, str) else list(wire.stop or [])
    tool_choice: str | dict[str, Any] | None
    if isinstance(wire.tool_choice, NamedToolChoice):
        tool_choice = wire.tool_choice.model_dump()
    else:
        tool_choice = wire.tool_choice
    return InferenceRequest(
        model=model_id,
        messages=[m.model_dump(exclude_none=True) for m in wire.messages],
        max_tokens=wire.max_completion_tokens or wire.max_tokens,
        temperature=wire.temperature,
        top_p=wire.top_p,
        top_k=wire.top_k,
        min_p=wire.min_p,
        frequency_penalty=wire.frequency_penalty,
        presence_penalty=wire.presence_penalty,
        stop=stop,
        seed=wire.seed,
        n=wire.n or 1,
        stream=bool(wire.stream),
        include_usage=bool(wire.stream_options and wire.stream_options.include_usage),
        tools=[t.model_dump(exclude_none=True) for t in wire.tools or []],
        tool_choice=tool_choice,
        parallel_tool_calls=wire.parallel_tool_calls,
        response_format=_response_format(wire),
        logprobs=bool(wire.logprobs),
        top_logprobs=wire.top_logprobs,
        reasoning_effort=wire.reasoning_effort,
        user=wire.user,
    )


def to_provider_preferences(wire: ChatCompletionRequest) -> ProviderPreferences | None:
    """The request's `provider` field, if it has one."""
    options = wire.provider
    if options is None:
        return None
    price = options.max_price
    return ProviderPreferences(
        only=None if options.only is None else tuple(options.only),
        ignore=tuple(options.ignore or ()),
        order=tuple(options.order or ()),
        allow_fallbacks=options.allow_fallbacks is not False,
        max_input_eur_per_million=price.prompt if price else None,
        max_output_eur_per_million=price.completion if price else None,
    )


def _invalid(param: str, message: str) -> HanseError:
    return HanseError(INVALID_VALUE, message, param=param, details={"parameter": param})


def _check(wire: ChatCompletionRequest) -> None:
    for name in NOT_SUPPORTED_YET_FIELDS:
        if getattr(wire, name) is not None:
            raise HanseError(
                NOT_SUPPORTED_YET,
                f"`{name}` is not supported yet by this gateway.",
                param=name,
                details={"parameter": name},
            )
    if (
        wire.max_tokens
        and wire.max_completion_tokens
        and wire.max_tokens != wire.max_completion_tokens
    ):
        raise _invalid("max_tokens", "Set `max_tokens` or `max_completion_tokens`, not both.")
    if isinstance(wire.stop, list) and any(not s for s in wire.stop):
        raise _invalid("stop", "Stop sequences must not be empty strings.")
    if wire.stop == "":
        raise _invalid("stop", "Stop sequences must not be empty strings.")
    if wire.stream_options is not None and not wire.stream:
        raise _invalid("stream_options", "`stream_options` is only allowed when `stream` is true.")
    if wire.top_logprobs is not None and not wire.logprobs:
        raise _invalid("top_logprobs", "`top_logprobs` needs `logprobs: true`.")
    _check_tools(wire)
    _check_messages(wire)
    if isinstance(wire.response_format, JsonSchemaResponseFormat):
        schema = wire.response_format.json_schema.schema_
        if schema is not None:
            try:
                validator_for(schema).check_schema(schema)
            except SchemaError as exc:
                raise _invalid(
                    "response_format.json_schema.schema", f"Not a valid JSON schema: {exc.message}"
                ) from exc
            outside = outside_reference(schema)
            if outside is not None:
                raise _invalid(
                    "response_format.json_schema.schema",
                    f"`$ref` must point inside the schema (start with `#`), not to {outside[:200]!r}.",
                )


def _check_tools(wire: ChatCompletionRequest) -> None:
    names = [t.function.name for t in wire.tools or []]
    if len(set(names)) != len(names):
        raise _invalid("tools", "Tool names must be unique.")
    for index, tool in enumerate(wire.tools or []):
        parameters = tool.function.parameters
        if parameters is not None and parameters.get("type", "object") != "object":
            raise _invalid(
                f"tools[{index}].function.parameters", "Parameters must be an object schema."
            )
    choice = wire.tool_choice
    if (choice == "required" or isinstance(choice, NamedToolChoice)) and not names:
        raise _invalid("tool_choice", "`tool_choice` needs `tools`.")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise _invalid(
            "tool_choice", f"`tool_choice` names `{choice.function.name}`, which is not in `tools`."
        )


def _check_messages(wire: ChatCompletionRequest) -> None:
    for index, message in enumerate(wire.messages):
        if (
            isinstance(message, AssistantMessage)
            and message.content is None
            and not message.tool_calls
        ):
            raise HanseError(
                MISSING_FIELD,
                "An assistant message needs `content` or `tool_calls`.",
                param=f"messages[{index}].content",
                details={"parameter": f"messages[{index}].content"},
            )


def _response_format(wire: ChatCompletionRequest) -> ResponseFormat | None:
    fmt = wire.response_format
    if fmt is None:
        return None
    if isinstance(fmt, JsonSchemaResponseFormat):
        spec = fmt.json_schema
        return ResponseFormat(
            type="json_schema",
            name=spec.name,
            schema=spec.schema_ or {"type": "object"},
            strict=spec.strict,
        )
    return ResponseFormat(type=fmt.type)
