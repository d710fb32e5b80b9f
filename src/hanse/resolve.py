"""Model ids as clients write them: a catalog id, optionally with a `:flavor` suffix."""

from __future__ import annotations

from dataclasses import dataclass

from hanse.config.schema import Catalog, ModelConfig
from hanse.errors import UNKNOWN_MODEL, HanseError

FLAVORS = ("balanced", "speed", "price", "eco", "batch")
DEFAULT_FLAVOR = "balanced"


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """The catalog model a request names, and the routing flavor it asked for."""

    model: ModelConfig
    flavor: str


def resolve_model(catalog: Catalog, requested: str) -> ResolvedModel:
    """Strip a flavor suffix only when the last `:segment` is a flavor; other colons are the id's."""
    base, _, suffix = requested.rpartition(":")
    model_id, flavor = (base, suffix) if base and suffix in FLAVORS else (requested, DEFAULT_FLAVOR)
    model = catalog.model(model_id)
    if model is None:
        raise HanseError(
            UNKNOWN_MODEL,
            f"The model `{requested}` does not exist. Use an id from GET /v1/models, optionally "
            f"with one of the flavors {', '.join(':' + f for f in FLAVORS)}.",
            param="model",
            details={"model": requested, "valid_flavors": list(FLAVORS)},
        )
    return ResolvedModel(model=model, flavor=flavor)
