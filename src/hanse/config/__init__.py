"""Configuration: the TOML catalog of providers and models."""

from hanse.config.loader import ConfigError, load_catalog
from hanse.config.schema import Catalog, ModelConfig, ProviderConfig, RouteConfig

__all__ = ["Catalog", "ConfigError", "ModelConfig", "ProviderConfig", "RouteConfig", "load_catalog"]
