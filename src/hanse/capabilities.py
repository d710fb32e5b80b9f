"""Checks a request against what its model can do, before any provider is called."""

from __future__ import annotations

from hanse.config.schema import ModelConfig
from hanse.domain import InferenceRequest
from hanse.errors import (
    CONTEXT_EXCEEDED,
    NO_LOGPROBS,
    NO_TOOLS,
    NO_VISION,
    HanseError,
)
from hanse.tokens import lower_bound


def check_capabilities(model: ModelConfig, request: InferenceRequest) -> None:
    """Raise the catalog error for the first thing the model cannot do."""
    caps = model.capabilities
    if request.tools and not caps.function_calling:
        raise HanseError(
            NO_TOOLS,
            f"The model `{model.id}` does not support function calling.",
            param="tools",
            details={"model": model.id},
        )
    if _has_images(request) and not caps.vision:
        raise HanseError(
            NO_VISION,
            f"The model `{model.id}` does not accept images.",
            param="messages",
            details={"model": model.id},
        )
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
    if request.tools:
        needed.add("function_calling")
    if _has_images(request):
        needed.add("vision")
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


def _has_images(request: InferenceRequest) -> bool:
    return any(
        isinstance(message.get("content"), list)
        and any(part.get("type") == "image_url" for part in message["content"])
        for message in request.messages
    )
