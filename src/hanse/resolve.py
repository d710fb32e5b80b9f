"""Model ids as clients write them: a catalog id, optionally with a `:flavor` suffix, and `preset`."""

from __future__ import annotations

from dataclasses import dataclass

from hanse.config.schema import FLAVORS, Catalog, ModelConfig
from hanse.errors import UNKNOWN_MODEL, HanseError

DEFAULT_FLAVOR = "balanced"


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """The catalog model a request names, its routing flavor, and whether to favour reasoning."""

    model: ModelConfig
    flavor: str
    reasoning: bool = False


def resolve_model(catalog: Catalog, requested: str, preset: str | None = None) -> ResolvedModel:
    """Strip a flavor suffix only when the last `:segment` is a flavor; other colons are the id's.

    Without a suffix, `preset` decides: `non_reasoning` is `:speed`, `reasoning` ranks routes marked
    for reasoning quality first. A suffix beats the preset.
    """
    base, _, suffix = requested.rpartition(":")
    suffixed = bool(base) and suffix in FLAVORS
    model_id = base if suffixed else requested
    model = catalog.model(model_id)
    if model is None:
        raise HanseError(
            UNKNOWN_MODEL,
            f"The model `{requested}` does not exist. Use an id from GET /v1/models, optionally "
            f"with one of the flavors {', '.join(':' + f for f in FLAVORS)}.",
            param="model",
            details={"model": requested, "valid_flavors": list(FLAVORS)},
        )
    if suffixed:
        return ResolvedModel(model=model, flavor=suffix)
    if preset == "non_reasoning":
        return ResolvedModel(model=model, flavor="speed")
    return ResolvedModel(model=model, flavor=DEFAULT_FLAVOR, reasoning=preset == "reasoning")
