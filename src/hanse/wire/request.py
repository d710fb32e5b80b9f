"""The chat completions request as the wire carries it: every parameter of the reference page, typed.

Parsing is strict (no "1" for 1, no unknown parameters); `parse_chat_request` turns pydantic's
complaints into catalog errors that name the parameter, and checks what spans several fields.
Every request OpenAI's published schema accepts parses (docs/parameters.md says what each field does);
fields marked `Ignored` are read and dropped: they never reach a provider.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from hanse.wire.json_body import check_json
from hanse.wire.validation import raise_for_validation_error

_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class PromptCacheBreakpoint(_Wire):
    mode: Literal["explicit"]


class PromptCacheOptions(_Wire):
    ttl: Literal["30m"] | None = None
    mode: Literal["implicit", "explicit"] | None = None


T = TypeVar("T")
# Read, checked and dropped: prompt-cache hints, replayed audio and annotations never reach a provider.
Ignored = Annotated[T | None, Field(exclude=True)]


class TextPart(_Wire):
    type: Literal["text"]
    text: str
    prompt_cache_breakpoint: Ignored[PromptCacheBreakpoint] = None


class ImageURL(_Wire):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Wire):
    type: Literal["image_url"]
    image_url: ImageURL
    prompt_cache_breakpoint: Ignored[PromptCacheBreakpoint] = None


class InputAudio(_Wire):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(_Wire):
    """Audio input (base64 `data`): forwarded to a model with `audio_input`."""

    type: Literal["input_audio"]
    input_audio: InputAudio
    prompt_cache_breakpoint: Ignored[PromptCacheBreakpoint] = None


class FileRef(_Wire):
    filename: str | None = None
    file_data: str | None = None
    file_id: str | None = None


class FilePart(_Wire):
    """A file input (base64 `file_data` or an upstream `file_id`): forwarded to a model with
    `file_input`."""

    type: Literal["file"]
    file: FileRef
    prompt_cache_breakpoint: Ignored[PromptCacheBreakpoint] = None


class RefusalPart(_Wire):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
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
    """A call the model made earlier (replayed history): its name is not re-checked."""

    name: str
    arguments: str


class ToolCall(_Wire):
    id: str
    type: Literal["function"]
    function: FunctionCall


class CustomCall(_Wire):
    """A custom tool's call the model made earlier: free-form `input`, not JSON."""

    name: str
    input: str


class CustomToolCall(_Wire):
    id: str
    type: Literal["custom"]
    custom: CustomCall


AnyToolCall = Annotated[ToolCall | CustomToolCall, Field(discriminator="type")]


class AssistantMessage(_Wire):
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[AnyToolCall] | None = None
    # Deprecated single call: becomes a tool call (hanse.wire.convert).
    function_call: Ignored[FunctionCall] = None
    # What the SDK's `message.model_dump()` replays besides: an earlier audio answer, web citations.
    audio: Ignored[dict[str, Any]] = None
    annotations: Ignored[list[dict[str, Any]]] = None


class ToolMessage(_Wire):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str
    # LangChain sends the tool's name; OpenAI's schema has none, so it is not forwarded.
    name: Ignored[str] = None


class FunctionMessage(_Wire):
    """Deprecated `role: "function"` result: becomes a tool result (hanse.wire.convert)."""

    role: Literal["function"]
    content: str | None
    name: str


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]


class FunctionDefinition(_Wire):
    name: Annotated[str, Field(pattern=_NAME)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Wire):
    type: Literal["function"]
    function: FunctionDefinition


class Grammar(_Wire):
    definition: str
    syntax: Literal["lark", "regex"]


class CustomTextFormat(_Wire):
    type: Literal["text"]


class CustomGrammarFormat(_Wire):
    type: Literal["grammar"]
    grammar: Grammar


class CustomDefinition(_Wire):
    # No pattern: OpenAI's schema gives custom tool names none (function names have one).
    name: str
    description: str | None = None
    format: (
        Annotated[CustomTextFormat | CustomGrammarFormat, Field(discriminator="type")] | None
    ) = None


class CustomTool(_Wire):
    """A custom tool: the model calls it with free-form text (`input`), optionally in a grammar."""

    type: Literal["custom"]
    custom: CustomDefinition


AnyTool = Annotated[Tool | CustomTool, Field(discriminator="type")]


def tool_name(tool: Tool | CustomTool) -> str:
    """The name a tool is called by, whichever its kind."""
    return tool.function.name if isinstance(tool, Tool) else tool.custom.name


class NamedFunction(_Wire):
    name: str


class NamedToolChoice(_Wire):
    type: Literal["function"]
    function: NamedFunction


class AllowedTools(_Wire):
    mode: Literal["auto", "required"]
    # Tool references, `{"type": "function", "function": {"name": ...}}` or
    # `{"type": "custom", "custom": {"name": ...}}` (checked in convert).
    tools: list[dict[str, Any]]


class AllowedToolsChoice(_Wire):
    """`tool_choice: {"type": "allowed_tools"}`: only these tools are offered, in `mode`."""

    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


class NamedCustom(_Wire):
    name: str


class CustomToolChoice(_Wire):
    """Forcing a custom tool (a model with `custom_tools`)."""

    type: Literal["custom"]
    custom: NamedCustom


ToolChoice = (
    Literal["none", "auto", "required"] | NamedToolChoice | AllowedToolsChoice | CustomToolChoice
)


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


class AudioOutput(_Wire):
    voice: str | dict[str, str]
    format: Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"]


class Prediction(_Wire):
    type: Literal["content"]
    content: str | list[TextPart]


class ApproximateLocation(_Wire):
    country: str | None = None
    region: str | None = None
    city: str | None = None
    timezone: str | None = None


class UserLocation(_Wire):
    type: Literal["approximate"]
    approximate: ApproximateLocation


class WebSearchOptions(_Wire):
    user_location: UserLocation | None = None
    search_context_size: Literal["low", "medium", "high"] | None = None


class ModerationConfig(_Wire):
    mode: Literal["score", "block"]


class ModerationPolicy(_Wire):
    input: ModerationConfig | None = None
    output: ModerationConfig | None = None


class Moderation(_Wire):
    model: str
    policy: ModerationPolicy | None = None


class LegacyFunction(_Wire):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class LegacyFunctionChoice(_Wire):
    name: str


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
    tools: list[AnyTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20), Integral] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = (
        None
    )
    preset: Literal["reasoning", "non_reasoning"] | None = None
    provider: ProviderOptions | None = None
    request_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")] | None = None
    # OpenAI parameters with no effect on a self-hosted gateway (docs/parameters.md).
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    safety_identifier: Annotated[str, Field(max_length=64)] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    web_search_options: WebSearchOptions | None = None
    prediction: Prediction | None = None
    moderation: Moderation | None = None
    # Audio output (`["text", "audio"]` with `audio`): a model with `audio_output`; without
    # "audio", both are dropped (text is every provider's answer anyway).
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOutput | None = None
    # Melious composition fields (hanse.blueprints): checked whole by the blueprint stage.
    blueprint_id: str | None = None
    blueprint_config: dict[str, Any] | None = None
    variables: dict[str, str] | None = None
    skill_ids: list[str] | None = None
    skill_configs: list[dict[str, Any]] | None = None
    # Token ids (as strings, as OpenAI takes them) -> a bias in [-100, 100].
    logit_bias: (
        dict[Annotated[str, Field(pattern=r"^\d{1,9}$")], Annotated[int, Field(ge=-100, le=100)]]
        | None
    ) = None
    # The deprecated form of `tools` / `tool_choice`, answered with `message.function_call`.
    functions: Annotated[list[LegacyFunction], Field(min_length=1)] | None = None
    function_call: Literal["none", "auto"] | LegacyFunctionChoice | None = None


def parse_chat_request(body: bytes) -> ChatCompletionRequest:
    """Parse and validate a request body, raising a catalog error that names the parameter."""
    check_json(body)
    try:
        return ChatCompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        raise_for_validation_error(exc, required=("model", "messages"))
