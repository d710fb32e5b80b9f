"""Anthropic Messages request types, as `POST /v1/messages` takes them.

The top level is strict (an unknown parameter is VALIDATION_4007, as Anthropic refuses it); blocks,
tools and the nested settings ignore keys they do not know, so that a beta field Claude Code adds
does not break it. What is read and has no effect is listed in docs/messages.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hanse.wire.json_body import check_json
from hanse.wire.validation import raise_for_validation_error


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _Lenient(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TextBlock(_Lenient):
    type: Literal["text"]
    text: str


class Base64Source(_Lenient):
    type: Literal["base64"]
    media_type: str
    data: str


class UrlSource(_Lenient):
    type: Literal["url"]
    url: str


class PlainTextSource(_Lenient):
    type: Literal["text"]
    data: str
    media_type: str | None = None


class ImageBlock(_Lenient):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]


class ContentSource(_Lenient):
    """A document given as blocks of text (a custom content document)."""

    type: Literal["content"]
    content: str | list[TextBlock]


DocumentSource = Annotated[
    Base64Source | UrlSource | PlainTextSource | ContentSource, Field(discriminator="type")
]


class DocumentBlock(_Lenient):
    type: Literal["document"]
    source: DocumentSource
    title: str | None = None


class ToolUseBlock(_Lenient):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


ResultPart = Annotated[TextBlock | ImageBlock | DocumentBlock, Field(discriminator="type")]


class ToolResultBlock(_Lenient):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ResultPart] | None = None
    is_error: bool | None = None


class ThinkingBlock(_Lenient):
    """Earlier reasoning replayed by the client: read, not forwarded (no provider takes it back)."""

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Lenient):
    type: Literal["redacted_thinking"]
    data: str


Block = Annotated[
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class MessageParam(_Lenient):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolParam(_Lenient):
    """A client tool; a server tool (`type` such as `web_search_20250305`) is refused in convert."""

    name: str
    input_schema: dict[str, Any]
    description: str | None = None
    type: str | None = None


class ToolChoice(_Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(_Lenient):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: Annotated[int, Field(ge=0)] | None = None


class JsonOutputFormat(_Lenient):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Lenient):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: JsonOutputFormat | None = None


class Metadata(_Lenient):
    user_id: str | None = None


class MessagesRequest(_Strict):
    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[MessageParam], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)]
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    # The structured-outputs beta's name for `output_config.format`.
    output_format: JsonOutputFormat | None = None
    stream: bool | None = None
    # Read, no effect: one service tier and no containers, geography or prompt-cache control here.
    service_tier: str | None = None
    cache_control: dict[str, Any] | None = None
    container: Any = None
    context_management: Any = None
    inference_geo: str | None = None
    speed: str | None = None
    diagnostics: Any = None


class CountTokensRequest(_Strict):
    """`POST /v1/messages/count_tokens`: the request without what only generation needs."""

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[MessageParam], Field(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    output_format: JsonOutputFormat | None = None
    cache_control: dict[str, Any] | None = None
    context_management: Any = None


def parse_messages_request(body: bytes) -> MessagesRequest:
    """Parse and validate a Messages body, raising a catalog error that names the parameter."""
    check_json(body)
    try:
        return MessagesRequest.model_validate_json(body)
    except ValidationError as exc:
        raise_for_validation_error(exc, required=("model", "messages", "max_tokens"))


def parse_count_request(body: bytes) -> CountTokensRequest:
    check_json(body)
    try:
        return CountTokensRequest.model_validate_json(body)
    except ValidationError as exc:
        raise_for_validation_error(exc, required=("model", "messages"))
