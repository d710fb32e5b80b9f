"""Builds the provider objects the catalog names."""

from __future__ import annotations

from hanse.config.schema import Catalog, ProviderConfig
from hanse.providers.base import Provider
from hanse.providers.openai_compatible import OpenAICompatibleProvider


def build_provider(config: ProviderConfig) -> Provider:
    if config.kind == "local":
        # Imported here so a gateway without an embedded model never loads llama.cpp.
        from hanse.providers.local import LocalProvider

        return LocalProvider(config)
    return OpenAICompatibleProvider(config)


def build_providers(catalog: Catalog) -> dict[str, Provider]:
    return {config.id: build_provider(config) for config in catalog.providers}
