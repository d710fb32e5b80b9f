"""The chat completions request as the wire carries it: every parameter of the reference page, typed.

Parsing is strict (no "1" for 1, no unknown parameters); `parse_chat_request` turns pydantic's
complaints into catalog errors that name the parameter, and checks what spans several fields.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from hanse.wire.validation import raise_for_validation_error

_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class TextPart(_Wire):
    type: Literal["text"]
    text: str


class ImageURL(_Wire):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Wire):
    type: Literal["image_url"]
    image_url: ImageURL


class RefusalPart(_Wire):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


class SystemMessage(_Wire):
    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(_Wire):
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class FunctionCall(_Wire):
    name: Annotated[str, Field(pattern=_NAME)]
    arguments: str


class ToolCall(_Wire):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(_Wire):
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class ToolMessage(_Wire):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class FunctionDefinition(_Wire):
    name: Annotated[str, Field(pattern=_NAME)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Wire):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Wire):
    name: str


class NamedToolChoice(_Wire):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Wire):
    name: Annotated[str, Field(pattern=_NAME)]
    description: str | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None


class TextFormat(_Wire):
    type: Literal["text"]


class JsonObjectFormat(_Wire):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(_Wire):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")
]


class StreamOptions(_Wire):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


RouteId = Annotated[str, Field(min_length=1, max_length=128)]
RouteIds = Annotated[list[RouteId], Field(max_length=64)]


class MaxPrice(_Wire):
    """Highest route prices accepted, in EUR per million tokens (OpenRouter's field names)."""

    prompt: Annotated[Decimal, Field(ge=0)] | None = None
    completion: Annotated[Decimal, Field(ge=0)] | None = None


class ProviderOptions(_Wire):
    """`provider`: which of the model's providers may serve the request (OpenRouter-style)."""

    only: RouteIds | None = None
    ignore: RouteIds | None = None
    order: RouteIds | None = None
    allow_fallbacks: bool | None = None
    max_price: MaxPrice | None = None


Probability = Annotated[float, Field(ge=0, le=1)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
# Integers stay within int64, as OpenAI's schema bounds `seed`: larger ones cannot travel as JSON.
_INT64_MAX = 2**63 - 1


def _integral(value: Any) -> Any:
    # JSON has one number type: `2.0` is the integer 2 (as JSON Schema says); `2.5` stays refused.
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integral = BeforeValidator(_integral)
Count = Annotated[int, Field(ge=1, le=_INT64_MAX), Integral]


class ChatCompletionRequest(_Wire):
    """POST /v1/chat/completions, as the reference page defines it."""

    # Optional here: a blueprint may name the model (VALIDATION_4002 when neither does).
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: Count | None = None
    max_completion_tokens: Count | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Probability | None = None
    top_k: Annotated[int, Field(ge=0, le=_INT64_MAX), Integral] | None = None
    min_p: Probability | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    # How many stops and tools, and how long: `[limits]` (hanse.limits), configurable.
    stop: str | list[str] | None = None
    seed: Annotated[int, Field(ge=-_INT64_MAX - 1, le=_INT64_MAX), Integral] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    n: Annotated[int, Field(ge=1, le=10), Integral] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20), Integral] | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    preset: Literal["reasoning", "non_reasoning"] | None = None
    provider: ProviderOptions | None = None
    request_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")] | None = None
    # Accepted for OpenAI compatibility, with no effect on a self-hosted gateway (docs/api-differences.md).
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: Literal["auto", "default"] | None = None
    # Melious composition fields (hanse.blueprints): checked whole by the blueprint stage.
    blueprint_id: str | None = None
    blueprint_config: dict[str, Any] | None = None
    variables: dict[str, str] | None = None
    skill_ids: list[str] | None = None
    skill_configs: list[dict[str, Any]] | None = None
    # OpenAI parameters Hanse recognises but does not serve (VALIDATION_4008).
    logit_bias: dict[str, Any] | None = None
    modalities: list[Any] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    verbosity: Any = None


NOT_SUPPORTED_YET_FIELDS = (
    "logit_bias",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "functions",
    "function_call",
    "verbosity",
)


def parse_chat_request(body: bytes) -> ChatCompletionRequest:
    """Parse and validate a request body, raising a catalog error that names the parameter."""
    try:
        return ChatCompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        raise_for_validation_error(exc, required=("model", "messages"))
