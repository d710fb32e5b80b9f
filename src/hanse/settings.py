"""Process settings, read once from the environment (HANSE_*)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from platformdirs import user_data_dir
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Environment settings; the catalog itself lives in the TOML file `config`."""

    model_config = SettingsConfigDict(env_prefix="HANSE_", extra="ignore")

    config: Path | None = None
    data_dir: Path = Path(user_data_dir("hanse"))
    database_url: str | None = None
    admin_token: str | None = None
    key_prefix: str = "sk-mel-"
    log_level: str = "info"
    # OpenTelemetry traces (hanse.http.tracing): the collector's OTLP/HTTP traces URL, e.g.
    # http://127.0.0.1:4318/v1/traces. Unset: no traces.
    traces_endpoint: str | None = None
    public_url: str = "http://127.0.0.1:8080"
    reservation_ttl_s: float = 900.0
    # How long a process may trust a key it checked (0: look every key up on every request).
    key_cache_ttl_s: float = Field(default=1.0, ge=0, le=1.0)
    sweep_interval_s: float = 30.0
    # scrypt cost for new vaults and rotations (a power of two; each account records its own).
    vault_scrypt_n: int = 2**15
    # Wrong X-Vault-Key tries a client may make per account before each next one waits (vault/throttle.py).
    vault_key_attempts: int = Field(default=5, ge=1)
    # Where the gateway runs (ISO alpha-2): the location of answers no model produced.
    location: str = Field(default="DE", pattern=r"^[A-Z]{2}$")
    # PostgreSQL connections each process may hold: the pool, and how many more under bursts.
    database_pool_size: int = Field(default=10, ge=1)
    database_max_overflow: int = Field(default=20, ge=0)
    # Redis, for rate limits and route health shared by every process (unset: per process).
    redis_url: str | None = None
    redis_prefix: str = "hanse:"
    redis_timeout_s: float = Field(default=0.5, gt=0, le=30)
    # Redis unreachable: `open` falls back to per-process limits, `closed` refuses (SYSTEM_9003).
    rate_limit_fallback: Literal["open", "closed"] = "open"
    # Open connections and requests per process before new requests get a 503 (uvicorn's limit).
    max_connections: int = Field(default=2048, ge=1)
    # Each connection (hanse.http.protocol): request line + headers, and how long they and the
    # body may take to arrive.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    header_timeout_s: float = Field(default=10.0, gt=0, le=600)
    body_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    # On SIGTERM: how long in-flight requests and streams may finish before they are cut.
    shutdown_timeout_s: int = Field(default=30, ge=0)

    @field_validator("vault_scrypt_n")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value < 2**10 or value & (value - 1):
            raise ValueError("HANSE_VAULT_SCRYPT_N must be a power of two, at least 1024")
        return value

    @field_validator("traces_endpoint")
    @classmethod
    def _traces_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("HANSE_TRACES_ENDPOINT must be an http:// or https:// URL")
        return value or None

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("HANSE_REDIS_URL must be a redis://, rediss:// or unix:// URL")
        return value

    @property
    def effective_database_url(self) -> str:
        """The configured database, or a SQLite file under the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'hanse.db'}"
