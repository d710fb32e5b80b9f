"""The `[messages]` table: how the Anthropic Messages face names catalog models."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class ModelRule(BaseModel):
    """A model name that contains `contains` (case-insensitive) is served by `model`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    contains: Annotated[str, Field(min_length=1)]
    model: Annotated[str, Field(min_length=1)]


class MessagesConfig(BaseModel):
    """Claude model names (`claude-sonnet-4-5`, `claude-opus-4-1`, ...) mapped to catalog models:
    the first rule that matches wins; a name no rule matches is looked up as it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_rules: list[ModelRule] = Field(default_factory=list)

    def catalog_model(self, name: str) -> str:
        lowered = name.lower()
        return next((r.model for r in self.model_rules if r.contains.lower() in lowered), name)
