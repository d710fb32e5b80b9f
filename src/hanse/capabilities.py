"""Checks a request against what its model can do, before any provider is called."""

from __future__ import annotations

from typing import Any

from hanse.config.schema import ModelConfig
from hanse.domain import InferenceRequest
from hanse.errors import (
    CONTEXT_EXCEEDED,
    NO_AUDIO_INPUT,
    NO_AUDIO_OUTPUT,
    NO_CUSTOM_TOOLS,
    NO_FILE_INPUT,
    NO_LOGPROBS,
    NO_TOOLS,
    NO_VISION,
    ErrorCode,
    HanseError,
)
from hanse.tokens import lower_bound


def check_capabilities(model: ModelConfig, request: InferenceRequest) -> None:
    """Raise the catalog error for the first thing the model cannot do."""
    caps = model.capabilities
    if _has_function_tools(request) and not caps.function_calling:
        raise _lacks(model, NO_TOOLS, "does not support function calling", "tools")
    custom = _custom_tool_use(request)
    if custom is not None and not caps.custom_tools:
        raise _lacks(model, NO_CUSTOM_TOOLS, "does not support custom tools", custom)
    if _has_part(request, "image_url") and not caps.vision:
        raise _lacks(model, NO_VISION, "does not accept images", "messages")
    if _has_part(request, "input_audio") and not caps.audio_input:
        raise _lacks(model, NO_AUDIO_INPUT, "does not accept audio", "messages")
    if _has_part(request, "file") and not caps.file_input:
        raise _lacks(model, NO_FILE_INPUT, "does not accept files", "messages")
    if _wants_audio(request) and not caps.audio_output:
        raise _lacks(model, NO_AUDIO_OUTPUT, "does not answer with audio", "modalities")
    # A `response_format` the model lacks is served by the structured-output fallback
    # (routing/structured.py), so it is never refused here.
    if request.logprobs and not caps.logprobs:
        raise HanseError(
            NO_LOGPROBS,
            f"The model `{model.id}` does not return log probabilities.",
            param="logprobs",
            details={"model": model.id},
        )


def needed_capabilities(request: InferenceRequest) -> set[str]:
    """The capabilities (`Capabilities` field names) a route must offer to serve the request."""
    needed = {"streaming"} if request.stream else set()
    if _has_function_tools(request):
        needed.add("function_calling")
    if _custom_tool_use(request) is not None:
        needed.add("custom_tools")
    for part, capability in _PART_CAPABILITIES.items():
        if _has_part(request, part):
            needed.add(capability)
    if _wants_audio(request):
        needed.add("audio_output")
    if request.logprobs:
        needed.add("logprobs")
    return needed


def check_context(model: ModelConfig, request: InferenceRequest, input_tokens: int) -> None:
    """INFERENCE_3207 when the input, plus the requested output, surely does not fit the context
    window: an exact count, or the floor of an estimate, is over it. An estimate that is merely
    over it goes to the provider, which knows its tokenizer."""
    floor = lower_bound(input_tokens)
    if floor >= model.context_length or floor + (request.max_tokens or 1) > model.context_length:
        raise HanseError(
            CONTEXT_EXCEEDED,
            _overflow_message(model.context_length, input_tokens, request.max_tokens),
            param="messages",
            details={
                "context_length": model.context_length,
                "input_tokens": int(input_tokens),
                "max_tokens": request.max_tokens,
                "openai_code": "context_length_exceeded",
            },
        )


def fit_max_tokens(model: ModelConfig, request: InferenceRequest, input_tokens: int) -> None:
    """Lower `max_tokens` to what the model can still produce after the input: Anthropic's API
    takes a `max_tokens` beyond the room left (Claude Code asks for 32,000 on any model), where
    OpenAI's refuses it. An input that leaves no room is left to the context check."""
    if request.max_tokens is None:
        return
    room = min(model.context_length - input_tokens, model.output_limit)
    if 0 < room < request.max_tokens:
        request.max_tokens = room


def _overflow_message(context_length: int, input_tokens: int, max_tokens: int | None) -> str:
    """OpenAI's own wording, which clients match on, with OpenAI's code at the end."""
    head = f"This model's maximum context length is {context_length} tokens. However, "
    if max_tokens:
        head += (
            f"you requested {input_tokens + max_tokens} tokens ({input_tokens} in the messages,"
            f" {max_tokens} in the completion). Please reduce the length of the messages or"
            " completion."
        )
    else:
        head += (
            f"your messages resulted in {input_tokens} tokens."
            " Please reduce the length of the messages."
        )
    return head + " (context_length_exceeded)"


# Content parts and the capability (`Capabilities` field) that a model needs to take them.
_PART_CAPABILITIES = {"image_url": "vision", "input_audio": "audio_input", "file": "file_input"}


def _lacks(model: ModelConfig, error: ErrorCode, what: str, param: str) -> HanseError:
    return HanseError(
        error, f"The model `{model.id}` {what}.", param=param, details={"model": model.id}
    )


def _has_part(request: InferenceRequest, kind: str) -> bool:
    return any(
        isinstance(message.get("content"), list)
        and any(part.get("type") == kind for part in message["content"])
        for message in request.messages
    )


def _has_function_tools(request: InferenceRequest) -> bool:
    return any(tool.get("type") == "function" for tool in request.tools)


def _custom_tool_use(request: InferenceRequest) -> str | None:
    """The parameter that uses a custom tool (offered, forced, or called in the history), if any."""
    if any(tool.get("type") == "custom" for tool in request.tools):
        return "tools"
    if isinstance(request.tool_choice, dict) and request.tool_choice.get("type") == "custom":
        return "tool_choice"
    for index, message in enumerate(request.messages):
        calls: list[dict[str, Any]] = message.get("tool_calls") or []
        if any(call.get("type") == "custom" for call in calls):
            return f"messages[{index}].tool_calls"
    return None


def _wants_audio(request: InferenceRequest) -> bool:
    return "audio" in (request.modalities or [])
