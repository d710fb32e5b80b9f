"""GET /v1/models bodies: the OpenAI model object, plus `_meta` on request."""

from __future__ import annotations

from typing import Any

from hanse.config.schema import Catalog, ModelConfig


def model_object(model: ModelConfig, include_meta: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
    }
    if include_meta:
        body["_meta"] = _meta(model)
    return body


def model_list(catalog: Catalog, include_meta: bool) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(m, include_meta) for m in catalog.models]}


def _meta(model: ModelConfig) -> dict[str, Any]:
    cheapest_in = min(r.input_eur_per_million for r in model.routes)
    cheapest_out = min(r.output_eur_per_million for r in model.routes)
    return {
        "type": "chat",
        "display_name": model.display_name or model.id,
        "input_modalities": model.input_modalities,
        "output_modalities": ["text"],
        "capabilities": model.capabilities.model_dump(),
        "context_length": model.context_length,
        "max_output_tokens": model.output_limit,
        "pricing": {
            "input_cost_per_million_eur": str(cheapest_in),
            "output_cost_per_million_eur": str(cheapest_out),
        },
    }
