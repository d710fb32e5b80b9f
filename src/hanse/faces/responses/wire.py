"""OpenAI Responses request types, as `POST /v1/responses` takes them.

The top level is strict (an unknown parameter is VALIDATION_4007, as OpenAI refuses it). `input`
items are told apart by `type` (a message may omit it) and each is checked by its own model, so an
error names the item: `input[2].call_id`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from hanse.errors import NOT_SUPPORTED_YET, HanseError
from hanse.wire.json_body import check_json
from hanse.wire.validation import raise_for_validation_error

Probability = Annotated[float, Field(ge=0, le=1)]


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class InputText(_Wire):
    type: Literal["input_text"]
    text: str


class InputImage(_Wire):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high"] | None = None


class InputFile(_Wire):
    type: Literal["input_file"]
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None
    file_url: str | None = None


class OutputText(_Wire):
    type: Literal["output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class Refusal(_Wire):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[
    InputText | InputImage | InputFile | OutputText | Refusal, Field(discriminator="type")
]


class MessageItem(_Wire):
    """A message: the short form (`role` and `content`), or a full item replayed with its id."""

    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None
    phase: str | None = None


class FunctionCallItem(_Wire):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(_Wire):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[InputText | InputImage | InputFile]
    id: str | None = None
    status: str | None = None


class ReasoningItem(_Wire):
    """Earlier reasoning replayed: read, not forwarded (no provider takes it back)."""

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[Any] = Field(default_factory=list)
    content: list[Any] | None = None
    encrypted_content: str | None = None
    status: str | None = None


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem
_ITEMS: dict[str, type[BaseModel]] = {
    "message": MessageItem,
    "function_call": FunctionCallItem,
    "function_call_output": FunctionCallOutputItem,
    "reasoning": ReasoningItem,
}


class FunctionTool(_Wire):
    type: Literal["function"]
    name: str
    parameters: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class NamedFunction(_Wire):
    type: Literal["function"]
    name: str


class AllowedTools(_Wire):
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


ToolChoice = (
    Literal["auto", "none", "required"]
    | Annotated[NamedFunction | AllowedTools, Field(discriminator="type")]
)


class TextFormat(_Wire):
    type: Literal["text"]


class JsonObjectFormat(_Wire):
    type: Literal["json_object"]


class JsonSchemaFormat(_Wire):
    type: Literal["json_schema"]
    name: str
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(_Wire):
    format: (
        Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]
        | None
    ) = None
    verbosity: Literal["low", "medium", "high"] | None = None


class Reasoning(_Wire):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class StreamOptions(_Wire):
    include_obfuscation: bool | None = None


class ResponsesRequest(_Wire):
    model: Annotated[str, Field(min_length=1)]
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice | None = None
    text: TextConfig | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Probability | None = None
    reasoning: Reasoning | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    background: Literal[False] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None


def parse_responses_request(
    body: bytes,
) -> tuple[ResponsesRequest, list[InputItem], list[FunctionTool]]:
    """The request, its `input` as items (a string is one user message), and its tools."""
    check_json(body)
    try:
        request = ResponsesRequest.model_validate_json(body)
    except ValidationError as exc:
        raise_for_validation_error(exc, required=("model", "input"))
    raw = request.input
    if isinstance(raw, str):
        items: list[InputItem] = [MessageItem(role="user", content=raw)]
    else:
        items = [_item(value, index) for index, value in enumerate(raw)]
    tools = [_tool(value, index) for index, value in enumerate(request.tools or [])]
    return request, items, tools


def _item(value: dict[str, Any], index: int) -> InputItem:
    kind = value.get("type", "message")
    model = _ITEMS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise HanseError(
            NOT_SUPPORTED_YET,
            f"Input items of type `{kind}` are not supported yet by this gateway "
            f"(it takes {', '.join(_ITEMS)}).",
            param=f"input[{index}].type",
            details={"parameter": f"input[{index}].type"},
        )
    try:
        item: InputItem = TypeAdapter(model).validate_python(value, strict=True)  # type: ignore[assignment]
    except ValidationError as exc:
        raise_for_validation_error(exc, prefix=f"input[{index}].")
    return item


def _tool(value: dict[str, Any], index: int) -> FunctionTool:
    if value.get("type") != "function":
        raise HanseError(
            NOT_SUPPORTED_YET,
            f"Tools of type `{value.get('type')}` are not supported yet by this gateway "
            "(function tools are).",
            param=f"tools[{index}].type",
            details={"parameter": f"tools[{index}].type"},
        )
    try:
        return FunctionTool.model_validate(value, strict=True)
    except ValidationError as exc:
        raise_for_validation_error(exc, prefix=f"tools[{index}].")
