"""Provider-neutral types: what the pipeline hands a provider and what a provider hands back.

Wire types (hanse.wire) convert to and from these; providers never see the HTTP request.
Messages stay in the OpenAI shape (already validated), since every provider speaks a dialect of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

# `blocked` (a blueprint railguard) and `blueprint_override` (no model ran) are Melious additions.
FinishReason = Literal[
    "stop", "length", "tool_calls", "content_filter", "blocked", "blueprint_override"
]
Logprobs = list[dict[str, Any]]
UsageSource = Literal["reported", "counted", "estimated", "missing"]
# A `function` tool's call carries JSON `arguments`; a `custom` tool's its free-form `input`.
ToolKind = Literal["function", "custom"]


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """`response_format`, normalised: json_schema carries its schema."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(slots=True)
class InferenceRequest:
    """A validated chat request, in terms every provider understands."""

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    logit_bias: dict[int, int] | None = None  # token id -> bias in [-100, 100]
    # Asked with the deprecated `functions`: the answer carries `function_call`, not `tool_calls`.
    legacy_functions: bool = False
    # Estimated prompt tokens of the image parts (known once they are re-encoded).
    image_tokens: int = 0
    # Audio output: `modalities` (e.g. ["text", "audio"]) and `audio` ({voice, format}), forwarded.
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None

    def forced_tool(self) -> str | None:
        """The function name `tool_choice` forces, if it names one."""
        if isinstance(self.tool_choice, dict) and self.tool_choice.get("type") == "function":
            name = self.tool_choice.get("function", {}).get("name")
            return name if isinstance(name, str) else None
        return None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call chosen by the model: a function's JSON `arguments`, or a custom
    tool's `input` (`kind` says which)."""

    id: str
    name: str
    arguments: str
    kind: ToolKind = "function"


@dataclass(slots=True)
class Usage:
    """Token counts of one request (all choices together).

    `source` says where the counts come from: "reported" by the provider, "counted" with a
    tokenizer, "estimated" from lengths, or "missing" when the provider sent no usage at all
    (the counts are then 0 until the gateway counts them itself).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Subsets the provider may report: prompt tokens served from its cache, completion
    # tokens spent reasoning.
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    source: UsageSource = "reported"
    # Audio within the prompt and completion tokens (charged as the others, at the route's price).
    audio_prompt_tokens: int = 0
    audio_completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Choice:
    """One finished choice of a non-streamed answer."""

    index: int
    content: str | None
    finish_reason: FinishReason
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: Logprobs | None = None
    # What the provider relays besides the answer: its reasoning text, and a refusal.
    reasoning: str | None = None
    refusal: str | None = None
    # Audio output, as OpenAI's `message.audio` ({id, data, expires_at, transcript}).
    audio: dict[str, Any] | None = None


@dataclass(slots=True)
class Completion:
    """A whole non-streamed answer."""

    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    service_tier: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call; `id`, `name` and `kind` come with its first piece
    (`arguments`: a custom call's piece of `input`)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None
    kind: ToolKind | None = None


@dataclass(slots=True)
class ChoiceDelta:
    """A piece of one streamed choice."""

    index: int
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: FinishReason | None = None
    logprobs: Logprobs | None = None
    system_fingerprint: str | None = None
    reasoning: str | None = None
    refusal: str | None = None
    service_tier: str | None = None
    # A piece of audio output, as OpenAI's `delta.audio` (id, data, transcript, expires_at).
    audio: dict[str, Any] | None = None

    def carries_answer(self) -> bool:
        """Whether the delta holds any of the answer (not just a role or metadata)."""
        return bool(
            self.content
            or self.tool_calls
            or self.reasoning
            or self.refusal
            or self.audio
            or self.logprobs
            or self.finish_reason
        )


StreamEvent = ChoiceDelta | Usage


@dataclass(frozen=True, slots=True)
class ProviderPreferences:
    """The request's `provider` field: which routes may serve it, and in what order (route ids)."""

    only: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    order: tuple[str, ...] = ()
    allow_fallbacks: bool = True
    max_input_eur_per_million: Decimal | None = None
    max_output_eur_per_million: Decimal | None = None
