"""Which of a model's routes may serve a request: capabilities, context, the client's `provider` field.

Filters run before ranking; `arrange` applies the client's `order` and `allow_fallbacks` after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hanse.capabilities import needed_capabilities
from hanse.config.schema import ModelConfig, RouteConfig
from hanse.domain import InferenceRequest, ProviderPreferences
from hanse.errors import NO_ROUTE, HanseError
from hanse.tokens import lower_bound

NO_PREFERENCES = ProviderPreferences()


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A route left out, and why (shown in INFERENCE_3104's details)."""

    route: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"route": self.route, "reason": self.reason}


def eligible(
    model: ModelConfig,
    request: InferenceRequest,
    preferences: ProviderPreferences,
    input_tokens: int,
) -> tuple[list[RouteConfig], list[Exclusion]]:
    """The routes that may serve the request (catalog order) and the ones left out."""
    offered = model.capabilities.model_dump()
    needed = sorted(needed_capabilities(request))
    wanted_tokens = lower_bound(input_tokens) + (request.max_tokens or 1)  # never an over-estimate
    kept: list[RouteConfig] = []
    excluded: list[Exclusion] = []
    for route in model.routes:
        reason = _gap(model, route, offered, needed, wanted_tokens) or _refusal(route, preferences)
        if reason is None:
            kept.append(route)
        else:
            excluded.append(Exclusion(route.id, reason))
    return kept, excluded


def arrange(ranked: list[RouteConfig], preferences: ProviderPreferences) -> list[RouteConfig]:
    """The client's `order` first, then the ranking; without fallbacks, only those (or the best)."""
    named = [r for name in preferences.order for r in ranked if r.id == name]
    if not preferences.allow_fallbacks:
        return named or ranked[:1]
    return named + [r for r in ranked if r not in named]


def no_route(model: ModelConfig, excluded: list[Exclusion]) -> HanseError:
    return HanseError(
        NO_ROUTE,
        f"No provider of `{model.id}` matches the request's capabilities and `provider` filters.",
        details={"model": model.id, "excluded": [e.as_dict() for e in excluded]},
        # The same request would be refused again: tell the SDKs not to retry this 503.
        headers={"X-Should-Retry": "false"},
    )


def _gap(
    model: ModelConfig,
    route: RouteConfig,
    offered: dict[str, bool],
    needed: list[str],
    wanted_tokens: int,
) -> str | None:
    """The first thing the request needs that the route lacks (input + max_tokens must fit)."""
    for name in needed:
        if not offered[name] or name in route.unsupported:
            return f"no {name}"
    context = route.context_length or model.context_length
    if wanted_tokens > context:
        return f"context_length {context} too small"
    return None


def _refusal(route: RouteConfig, preferences: ProviderPreferences) -> str | None:
    if preferences.only is not None and route.id not in preferences.only:
        return "not in provider.only"
    if route.id in preferences.ignore:
        return "in provider.ignore"
    top_in = preferences.max_input_eur_per_million
    top_out = preferences.max_output_eur_per_million
    if (top_in is not None and route.input_eur_per_million > top_in) or (
        top_out is not None and route.output_eur_per_million > top_out
    ):
        return "over provider.max_price"
    return None
