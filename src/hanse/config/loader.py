"""Reads the TOML catalog (or the embedded default) into a validated `Catalog`."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hanse.config.schema import Catalog

EMBEDDED_PROVIDER_ID = "hanse-local"
EMBEDDED_MODEL_ID = "smollm2-135m"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file, the key and the problem."""


def default_catalog_data() -> dict[str, Any]:
    """The catalog with no config file: the embedded SmolLM2-135M-Instruct, free."""
    return {
        "providers": [{"id": EMBEDDED_PROVIDER_ID, "kind": "local", "pue": 1.0}],
        "models": [
            {
                "id": EMBEDDED_MODEL_ID,
                "owned_by": "huggingfacetb",
                "display_name": "SmolLM2 135M Instruct (embedded)",
                "context_length": 8192,
                "max_output_tokens": 8192,
                "capabilities": {
                    "streaming": True,
                    "function_calling": True,
                    "structured_output": True,
                    "json_schema": True,
                    "logprobs": True,
                },
                "parameters_billion": {"active": 0.135, "total": 0.135},
                "routes": [{"provider": EMBEDDED_PROVIDER_ID}],
            }
        ],
    }


def load_catalog(path: str | Path | None) -> Catalog:
    """Load `path`, or the embedded default when `path` is None."""
    if path is None:
        return Catalog.model_validate(default_catalog_data())
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML ({exc})") from exc
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors())
        raise ConfigError(f"{file}: {problems}") from exc


def _describe(err: Any) -> str:
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    # Checks that span the whole catalog name their key path in the message itself.
    return f"{key.lstrip('.')}: {message}" if key else message
