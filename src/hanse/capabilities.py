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
    """INFERENCE_3207 when the input, plus the requested output, does not fit the context window."""
    wanted = input_tokens + (request.max_tokens or 1)
    if input_tokens >= model.context_length or wanted > model.context_length:
        raise HanseError(
            CONTEXT_EXCEEDED,
            f"The input ({input_tokens} tokens)"
            + (f" plus max_tokens ({request.max_tokens})" if request.max_tokens else "")
            + f" does not fit the context window of `{model.id}` ({model.context_length} tokens).",
            param="messages",
            details={
                "context_length": model.context_length,
                "input_tokens": input_tokens,
                "max_tokens": request.max_tokens,
            },
        )


def _has_images(request: InferenceRequest) -> bool:
    return any(
        isinstance(message.get("content"), list)
        and any(part.get("type") == "image_url" for part in message["content"])
        for message in request.messages
    )
