"""The `[limits]` and `[images]` tables: what one request may ask for, and how images are fetched."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, field_validator

from hanse.config.hosts import host_allowance

_MIB = 1024 * 1024


class LimitsConfig(BaseModel):
    """Bounds on one request; a breach is a VALIDATION_4xxx error naming the limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: Annotated[int, Field(ge=1024)] = 32 * _MIB
    max_messages: Annotated[int, Field(ge=1)] = 2048
    max_content_chars: Annotated[int, Field(ge=1)] = 4_000_000
    max_tools: Annotated[int, Field(ge=0)] = 128
    max_schema_depth: Annotated[int, Field(ge=1, le=64)] = 32
    max_schema_bytes: Annotated[int, Field(ge=64)] = 64 * 1024
    max_stop_sequences: Annotated[int, Field(ge=0)] = 4
    max_stop_chars: Annotated[int, Field(ge=1)] = 256
    max_total_output_tokens: Annotated[int, Field(ge=1)] = 262_144
    max_images: Annotated[int, Field(ge=0)] = 16
    max_image_bytes: Annotated[int, Field(ge=1024)] = 20 * _MIB
    # 7680 x 4320 (8K UHD): decoded, about 100 MB of RGB.
    max_image_pixels: Annotated[int, Field(ge=1)] = 33_177_600


class ImagesConfig(BaseModel):
    """The safe fetcher's policy and the re-encoding of image inputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_hosts: tuple[str, ...] = ()
    allow_cidrs: tuple[IPvAnyNetwork, ...] = ()
    connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    read_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    max_redirects: Annotated[int, Field(ge=0, le=10)] = 3
    # Longest side after re-encoding; 0 keeps the image's own size.
    max_side: Annotated[int, Field(ge=0, le=16384)] = 2048

    @field_validator("allow_hosts")
    @classmethod
    def _normal_hosts(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        # Compared with the URL's host and port after the same normalisation (lower case, no
        # trailing dot); a malformed entry (a bad port) fails here, at start-up.
        for entry in hosts:
            host_allowance(entry)
        return tuple(host.lower() for host in hosts)
