"""Scores a model's routes for a flavor from price, speed and environment.

Each factor is a cost (lower is better), normalised across the candidate routes by dividing by its
largest value, so every factor lies in [0, 1] whatever its unit and a flavor's weights mean what they
say. A route's score is `sum(weight * (1 - share))`: 1 would be best on every factor at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from hanse.config.schema import ProviderConfig, RouteConfig
from hanse.grid import grid_mix

# Output tokens assumed for price and speed when the request does not set `max_tokens`.
REFERENCE_OUTPUT_TOKENS = 256
_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Weights:
    """How much each factor counts; the three add up to 1."""

    price: float
    speed: float
    environment: float


FLAVOR_WEIGHTS: dict[str, Weights] = {
    "balanced": Weights(0.40, 0.40, 0.20),
    "speed": Weights(0.20, 0.70, 0.10),
    "price": Weights(0.70, 0.20, 0.10),
    "eco": Weights(0.20, 0.20, 0.60),
    "batch": Weights(0.80, 0.05, 0.15),
}


@dataclass(frozen=True, slots=True)
class Speed:
    """A route's speed: time to first token and generation rate."""

    ttft_s: float
    tokens_per_s: float


@dataclass(frozen=True, slots=True)
class Factors:
    """One route's raw costs: euros for the request, seconds for the answer, gCO2 per kWh."""

    price_eur: Decimal
    seconds: float
    carbon_g_per_kwh: float


def request_price(route: RouteConfig, input_tokens: int, output_tokens: int) -> Decimal:
    """What the request would cost on this route, in euros."""
    return (
        route.input_eur_per_million * input_tokens + route.output_eur_per_million * output_tokens
    ) / _MILLION


def expected_seconds(speed: Speed, output_tokens: int) -> float:
    """Time to first token plus the time to generate `output_tokens`."""
    return speed.ttft_s + output_tokens / speed.tokens_per_s


def carbon_intensity(provider: ProviderConfig) -> float:
    """gCO2 per kWh of computing: the country's grid x PUE, less the renewable share."""
    grid = grid_mix(provider.location).carbon_g_per_kwh
    return grid * provider.pue * (1 - provider.renewable_percent / 100)


def scores(factors: Sequence[Factors], weights: Weights) -> list[float]:
    """Each route's score in [0, 1], higher is better, relative to the other candidates."""
    price = _shares([float(f.price_eur) for f in factors])
    speed = _shares([f.seconds for f in factors])
    environment = _shares([f.carbon_g_per_kwh for f in factors])
    return [
        weights.price * (1 - p) + weights.speed * (1 - s) + weights.environment * (1 - e)
        for p, s, e in zip(price, speed, environment, strict=True)
    ]


def _shares(values: list[float]) -> list[float]:
    """Each value as a share of the largest; all zero when the largest is zero (a free factor)."""
    top = max(values, default=0.0)
    return [value / top if top > 0 else 0.0 for value in values]
