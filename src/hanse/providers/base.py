"""What every provider offers the pipeline."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Literal, Protocol

from hanse.config.schema import ModelConfig, RouteConfig
from hanse.domain import Completion, InferenceRequest, StreamEvent


class Provider(Protocol):
    """A place that runs models: the embedded llama.cpp, or an OpenAI-shaped upstream."""

    id: str

    async def start(self) -> None:
        """Acquire what serving needs (load weights, open a connection pool)."""

    async def close(self) -> None:
        """Release it."""

    def count_input_tokens(self, request: InferenceRequest, model: ModelConfig) -> int | None:
        """The prompt's exact token count, when this provider knows the model's tokenizer."""

    async def complete(self, request: InferenceRequest, route: RouteConfig) -> Completion:
        """Answer the whole request at once."""

    def stream(
        self, request: InferenceRequest, route: RouteConfig
    ) -> AsyncGenerator[StreamEvent, None]:
        """Answer piece by piece; the last event is the `Usage` of the whole request."""


FailureKind = Literal["connect", "timeout", "rate_limited", "server", "malformed", "auth"]


class ProviderFailure(Exception):
    """A provider could not answer, through no fault of the client: another route might."""

    def __init__(
        self,
        kind: FailureKind,
        detail: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.kind = kind
        self.detail = detail
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"{kind}: {detail}")
