"""Wire request -> provider-neutral `InferenceRequest`, with the checks that span several fields.

Deprecated shapes become their current ones here: an assistant's `function_call` a tool call, a
`role: "function"` message a tool result, `tool_choice: allowed_tools` the narrowed `tools`.
"""

from __future__ import annotations

from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from hanse.domain import InferenceRequest, ProviderPreferences, ResponseFormat
from hanse.errors import (
    INVALID_VALUE,
    MISSING_FIELD,
    MISSING_REQUIRED,
    HanseError,
)
from hanse.schema_validation import outside_reference
from hanse.wire.request import (
    AllowedToolsChoice,
    AssistantMessage,
    ChatCompletionRequest,
    CustomToolChoice,
    FunctionMessage,
    JsonSchemaResponseFormat,
    LegacyFunctionChoice,
    Message,
    NamedToolChoice,
    Tool,
    tool_name,
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
    # An empty stop string would end every answer at once; OpenAI's schema allows it, so it is dropped.
    stops = [wire.stop] if isinstance(wire.stop, str) else list(wire.stop or [])
    stop = [s for s in stops if s]
    tools, tool_choice = _tools(wire)
    return InferenceRequest(
        model=model_id,
        messages=_messages(wire.messages),
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
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=False if wire.functions else wire.parallel_tool_calls,
        legacy_functions=bool(wire.functions),
        response_format=_response_format(wire),
        logprobs=bool(wire.logprobs),
        top_logprobs=wire.top_logprobs,
        reasoning_effort=wire.reasoning_effort,
        user=wire.user,
        logit_bias={int(k): v for k, v in wire.logit_bias.items()} if wire.logit_bias else None,
        **_audio_output(wire),
    )


def _audio_output(wire: ChatCompletionRequest) -> dict[str, Any]:
    """`modalities` and `audio`, forwarded only when audio output is asked for: text alone is what
    every provider answers anyway, and `audio` means nothing without it (as at OpenAI)."""
    if "audio" not in (wire.modalities or []) or wire.audio is None:
        return {}
    return {"modalities": list(wire.modalities or []), "audio": wire.audio.model_dump()}


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
    if "audio" in (wire.modalities or []) and wire.audio is None:
        # As OpenAI: audio output needs its voice and format.
        raise HanseError(
            MISSING_FIELD,
            '`modalities: ["audio"]` needs `audio` (`{"voice": ..., "format": ...}`).',
            param="audio",
            details={"parameter": "audio"},
        )
    if (
        wire.max_tokens
        and wire.max_completion_tokens
        and wire.max_tokens != wire.max_completion_tokens
    ):
        raise _invalid("max_tokens", "Set `max_tokens` or `max_completion_tokens`, not both.")
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
    _check_functions(wire)
    tools = wire.tools or []
    # One name space for function and custom tools: a call names its tool by name alone.
    names = [tool_name(t) for t in tools]
    if len(set(names)) != len(names):
        raise _invalid("tools", "Tool names must be unique.")
    offered = {(t.type, tool_name(t)) for t in tools}
    for index, tool in enumerate(tools):
        parameters = tool.function.parameters if isinstance(tool, Tool) else None
        if parameters is not None and parameters.get("type", "object") != "object":
            raise _invalid(
                f"tools[{index}].function.parameters", "Parameters must be an object schema."
            )
    choice = wire.tool_choice
    named = isinstance(choice, NamedToolChoice | CustomToolChoice)
    if (choice == "required" or named) and not names:
        raise _invalid("tool_choice", "`tool_choice` needs `tools`.")
    if isinstance(choice, NamedToolChoice) and ("function", choice.function.name) not in offered:
        raise _invalid(
            "tool_choice",
            f"`tool_choice` names the function `{choice.function.name}`, which is not in `tools`.",
        )
    if isinstance(choice, CustomToolChoice) and ("custom", choice.custom.name) not in offered:
        raise _invalid(
            "tool_choice",
            f"`tool_choice` names the custom tool `{choice.custom.name}`, which is not in `tools`.",
        )
    if isinstance(choice, AllowedToolsChoice):
        for index, ref in enumerate(choice.allowed_tools.tools):
            if _reference(ref) not in offered:
                raise _invalid(
                    f"tool_choice.allowed_tools.tools[{index}]",
                    "Each allowed tool must name a tool in `tools`"
                    ' (`{"type": "function", "function": {"name": ...}}` or'
                    ' `{"type": "custom", "custom": {"name": ...}}`).',
                )


def _check_functions(wire: ChatCompletionRequest) -> None:
    """The deprecated `functions`: not beside `tools`, names unique, `function_call` among them."""
    if wire.function_call is not None and not wire.functions:
        raise _invalid("function_call", "`function_call` needs `functions`.")
    if not wire.functions:
        return
    if wire.tools or wire.tool_choice is not None:
        raise _invalid("functions", "Use `tools` or the deprecated `functions`, not both.")
    names = [f.name for f in wire.functions]
    if len(set(names)) != len(names):
        raise _invalid("functions", "Function names must be unique.")
    call = wire.function_call
    if isinstance(call, LegacyFunctionChoice) and call.name not in names:
        raise _invalid("function_call", f"`function_call` names `{call.name}`, not in `functions`.")


def _reference(ref: dict[str, Any]) -> tuple[str, str] | None:
    """The (kind, name) an `allowed_tools` entry names: Chat's nested form
    (`{"type": "custom", "custom": {"name": ...}}`) or the Responses API's flat one."""
    kind = ref.get("type")
    if kind not in ("function", "custom"):
        return None
    nested = ref.get(kind)
    name = nested.get("name") if isinstance(nested, dict) else ref.get("name")
    return (kind, name) if isinstance(name, str) else None


def _check_messages(wire: ChatCompletionRequest) -> None:
    for index, message in enumerate(wire.messages):
        if (
            isinstance(message, AssistantMessage)
            and message.content is None
            and not (message.tool_calls or message.function_call or message.refusal)
        ):
            raise HanseError(
                MISSING_FIELD,
                "An assistant message needs `content`, `tool_calls` or `refusal`.",
                param=f"messages[{index}].content",
                details={"parameter": f"messages[{index}].content"},
            )


def _tools(wire: ChatCompletionRequest) -> tuple[list[dict[str, Any]], str | dict[str, Any] | None]:
    """`tools` and `tool_choice` for the provider: `allowed_tools` narrows the tools to its list;
    the deprecated `functions` / `function_call` are the same as function tools and their choice."""
    if wire.functions:
        legacy = [
            {"type": "function", "function": f.model_dump(exclude_none=True)}
            for f in wire.functions
        ]
        call = wire.function_call
        if isinstance(call, LegacyFunctionChoice):
            return legacy, {"type": "function", "function": {"name": call.name}}
        return legacy, call
    tools = [t.model_dump(exclude_none=True) for t in wire.tools or []]
    choice = wire.tool_choice
    if isinstance(choice, NamedToolChoice | CustomToolChoice):
        return tools, choice.model_dump()
    if isinstance(choice, AllowedToolsChoice):
        allowed = {_reference(ref) for ref in choice.allowed_tools.tools}
        tools = [t for t in tools if (t["type"], t[t["type"]]["name"]) in allowed]
        return tools, choice.allowed_tools.mode if tools else None
    return tools, choice


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    """The conversation as providers take it, deprecated function turns made tool turns."""
    out: list[dict[str, Any]] = []
    call_ids: dict[str, str] = {}  # function name -> id of its latest legacy call
    for index, message in enumerate(messages):
        if isinstance(message, FunctionMessage):
            call_id = call_ids.get(message.name, f"call_function_{index}")
            out.append({"role": "tool", "content": message.content or "", "tool_call_id": call_id})
            continue
        item = message.model_dump(exclude_none=True)
        if isinstance(message, AssistantMessage):
            call = message.function_call
            if call is not None and not message.tool_calls:
                call_ids[call.name] = f"call_function_{index}"
                function = {"name": call.name, "arguments": call.arguments}
                item["tool_calls"] = [
                    {"id": call_ids[call.name], "type": "function", "function": function}
                ]
            if message.content is None and message.refusal and not item.get("tool_calls"):
                item["content"] = message.refusal  # a replayed refusal: its text is the turn
        out.append(item)
    return out


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
