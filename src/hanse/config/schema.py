"""The catalog: providers and the models they serve, parsed strictly (unknown keys are errors) and frozen."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hanse.config.faces import MessagesConfig
from hanse.config.intensity import HourlyIntensity, read_hourly_intensity
from hanse.config.limits import ImagesConfig, LimitsConfig
from hanse.config.ratelimits import RateLimitsConfig
from hanse.grid import is_country
from hanse.money import PRICE_DECIMALS
from hanse.tokens import check_spec

_ID = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"
# Model ids may hold colons (`qwen2.5:7b`); only a trailing flavor is the client's suffix.
_MODEL_ID = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
# The routing flavors a model id may end in (`glm-4.7:eco`); resolve.py strips them.
FLAVORS = ("balanced", "speed", "price", "eco", "batch")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderConfig(_Strict):
    """One upstream (or the embedded model) that serves routes."""

    id: Annotated[str, Field(pattern=_ID)]
    kind: Literal["openai_compatible", "local"]
    base_url: Annotated[str | None, Field(validate_default=True)] = None
    api_key_env: str | None = None
    location: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "DE"
    pue: Annotated[float, Field(ge=1.0, le=3.0)] = 1.2
    renewable_percent: Annotated[float, Field(ge=0, le=100)] = 0
    wue: Annotated[float, Field(ge=0, le=20)] = 0.5

    @field_validator("location")
    @classmethod
    def _known_country(cls, value: str) -> str:
        if not is_country(value):
            raise ValueError(f"{value!r} is not an ISO 3166 alpha-2 country code")
        return value

    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0
    read_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 600.0
    model_path: str | None = None
    n_threads: Annotated[int, Field(ge=1, le=256)] = 2
    n_ctx: Annotated[int, Field(ge=256, le=131072)] = 8192
    # Routing: the speed assumed until the first measurement; whether it serves at reasoning quality.
    prior_ttft_ms: Annotated[float, Field(gt=0, le=600_000)] = 500.0
    prior_tokens_per_s: Annotated[float, Field(gt=0, le=100_000)] = 50.0
    reasoning: bool = False
    # How messages go upstream: "compatible" rewrites them into the form every server accepts
    # (developer as system, text parts as one string, "" beside tool calls); "modern" sends them as is.
    wire_form: Literal["compatible", "modern"] = "compatible"

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A field check (not a model one), so that the error names `providers[i].base_url`.
        if info.data.get("kind") == "openai_compatible":
            if not value:
                raise ValueError("an openai_compatible provider needs base_url")
            if not re.match(r"^https?://[^\s/]+", value):
                raise ValueError("base_url must be an http:// or https:// URL")
        return value


class Capabilities(_Strict):
    streaming: bool = True
    function_calling: bool = False
    vision: bool = False
    structured_output: bool = False
    json_schema: bool = False
    audio_input: bool = False
    # `file` content parts, `custom` tools (their choices and calls), and `modalities: ["audio"]`.
    file_input: bool = False
    custom_tools: bool = False
    audio_output: bool = False
    reasoning: bool = False
    logprobs: bool = True


class ParametersBillion(_Strict):
    active: Annotated[float, Field(gt=0)]
    total: Annotated[float, Field(gt=0)]


RouteCapability = Literal[
    "streaming",
    "function_calling",
    "vision",
    "structured_output",
    "json_schema",
    "logprobs",
    "audio_input",
    "file_input",
    "custom_tools",
    "audio_output",
]


class RouteConfig(_Strict):
    """One way to serve a model: a provider and what the provider calls it."""

    provider: str
    upstream_model: str | None = None
    input_eur_per_million: Annotated[Decimal, Field(ge=0)] = Decimal(0)
    output_eur_per_million: Annotated[Decimal, Field(ge=0)] = Decimal(0)
    # Prompt tokens the provider served from its cache (None: the input price).
    cached_input_eur_per_million: Annotated[Decimal, Field(ge=0)] | None = None
    energy_kwh_per_token: Annotated[float, Field(gt=0, lt=1)] | None = None
    # Routing: where this route falls short of its model, and whether it serves at reasoning quality.
    context_length: Annotated[int, Field(ge=1)] | None = None
    unsupported: tuple[RouteCapability, ...] = ()
    reasoning: bool = False

    @field_validator(
        "input_eur_per_million", "output_eur_per_million", "cached_input_eur_per_million"
    )
    @classmethod
    def _exact_price(cls, value: Decimal | None) -> Decimal | None:
        # Six decimals per million tokens keep every token's price a whole number of pico-euros.
        if value is None:
            return value
        if value != value.quantize(Decimal(1).scaleb(-PRICE_DECIMALS)) or value > 10**6:
            raise ValueError(f"a price has at most {PRICE_DECIMALS} decimals and is below 1000000")
        return value

    @property
    def id(self) -> str:
        return self.provider

    @property
    def cached_input_price(self) -> Decimal:
        cached = self.cached_input_eur_per_million
        return self.input_eur_per_million if cached is None else cached


class ModelConfig(_Strict):
    id: Annotated[str, Field(pattern=_MODEL_ID)]
    owned_by: str = "hanse"
    display_name: str | None = None
    created: int = 1735689600
    context_length: Annotated[int, Field(ge=1)]
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    capabilities: Capabilities = Capabilities()
    parameters_billion: ParametersBillion | None = None
    # How its tokens are counted: gguf:<path>, tokenizers:<tokenizer.json> or tiktoken:<encoding>
    # (None: the embedded engine's GGUF when it serves the model, else an estimate); see tokens.py.
    tokenizer: str | None = None
    routes: Annotated[list[RouteConfig], Field(min_length=1)]

    @field_validator("tokenizer")
    @classmethod
    def _loadable_tokenizer(cls, value: str | None) -> str | None:
        return None if value is None else check_spec(value)

    @field_validator("id")
    @classmethod
    def _no_flavor_suffix(cls, value: str) -> str:
        if value.rsplit(":", 1)[-1] in FLAVORS and ":" in value:
            raise ValueError("a model id may not end in a flavor suffix")
        return value

    @property
    def output_limit(self) -> int:
        return self.max_output_tokens or self.context_length

    @property
    def input_modalities(self) -> list[str]:
        return ["text", "image"] if self.capabilities.vision else ["text"]


class ImpactConfig(_Strict):
    """How environmental impact is estimated beyond the catalog's per-provider figures."""

    hourly_carbon_csv: Annotated[HourlyIntensity, BeforeValidator(read_hourly_intensity)] = Field(
        default_factory=dict
    )


class RoutingConfig(_Strict):
    """Failover bounds, the circuit breaker and speed smoothing (the `[routing]` table)."""

    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    request_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 600.0
    breaker_failures: Annotated[int, Field(ge=1)] = 5
    breaker_failure_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    breaker_window_s: Annotated[float, Field(gt=0)] = 60.0
    breaker_min_requests: Annotated[int, Field(ge=1)] = 10
    breaker_cooldown_s: Annotated[float, Field(gt=0)] = 30.0
    rate_limit_cooldown_s: Annotated[float, Field(ge=0)] = 5.0
    # The longest a streamed answer may run after its first event (its hold outlives it).
    stream_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 1800.0
    speed_smoothing: Annotated[float, Field(ge=0, le=1)] = 0.3


class Catalog(_Strict):
    """Everything the gateway can route to."""

    providers: list[ProviderConfig]
    models: list[ModelConfig]
    routing: RoutingConfig = RoutingConfig()
    impact: ImpactConfig = ImpactConfig()
    limits: LimitsConfig = LimitsConfig()
    images: ImagesConfig = ImagesConfig()
    rate_limits: RateLimitsConfig = RateLimitsConfig()
    messages: MessagesConfig = MessagesConfig()

    @model_validator(mode="after")
    def _references(self) -> Catalog:
        provider_ids = [p.id for p in self.providers]
        _unique(provider_ids, "providers")
        _unique([m.id for m in self.models], "models")
        model_ids = {m.id for m in self.models}
        for i, rule in enumerate(self.messages.model_rules):
            # A rule may name a flavor (`model:speed`); the model itself must exist.
            if rule.model.partition(":")[0] not in model_ids:
                raise ValueError(f"messages.model_rules[{i}].model: unknown model {rule.model!r}")
        for i, model in enumerate(self.models):
            for j, route in enumerate(model.routes):
                if route.provider not in provider_ids:
                    raise ValueError(
                        f"models[{i}].routes[{j}].provider: model {model.id!r} routes to "
                        f"unknown provider {route.provider!r}"
                    )
                # A route is known by its provider (X-Hanse-Provider, `provider.only`, health).
                if route.provider in [r.provider for r in model.routes[:j]]:
                    raise ValueError(
                        f"models[{i}].routes[{j}].provider: model {model.id!r} has two routes "
                        f"through provider {route.provider!r}"
                    )
        return self

    def model(self, model_id: str) -> ModelConfig | None:
        return next((m for m in self.models if m.id == model_id), None)

    def provider(self, provider_id: str) -> ProviderConfig:
        return next(p for p in self.providers if p.id == provider_id)


def _unique(ids: list[str], table: str) -> None:
    seen: set[str] = set()
    for index, item in enumerate(ids):
        if item in seen:
            raise ValueError(f"{table}[{index}].id: duplicate id {item!r}")
        seen.add(item)
