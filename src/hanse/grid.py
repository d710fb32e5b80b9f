"""Electricity grids by country: carbon intensity and water use, from EcoLogits' packaged data.

EcoLogits keys its mixes by ISO 3166 alpha-3 zone; the catalog speaks alpha-2. A country EcoLogits does
not list falls back to its world average (`WOR`), and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pycountry
from ecologits.electricity_mix_repository import ElectricityMixRepository

WORLD_ZONE = "WOR"


@dataclass(frozen=True, slots=True)
class GridMix:
    """The average grid of one country."""

    country: str
    zone: str
    carbon_g_per_kwh: float
    water_l_per_kwh: float
    world_fallback: bool


@cache
def _repository() -> ElectricityMixRepository:
    return ElectricityMixRepository.from_json()


def is_country(code: str) -> bool:
    """Whether `code` is an ISO 3166 alpha-2 country code."""
    return pycountry.countries.get(alpha_2=code) is not None


@cache
def grid_mix(country: str) -> GridMix:
    """The grid of an ISO alpha-2 country (the world average where EcoLogits has no data)."""
    record = pycountry.countries.get(alpha_2=country)
    zone = record.alpha_3 if record is not None else WORLD_ZONE
    mix = _repository().find_electricity_mix(zone)
    fallback = record is None or mix is None
    if mix is None:
        mix = _repository().find_electricity_mix(WORLD_ZONE)
    assert mix is not None, "EcoLogits ships a world average"
    return GridMix(
        country=country,
        zone=mix.zone,
        carbon_g_per_kwh=mix.gwp * 1000,
        water_l_per_kwh=mix.wue,
        world_fallback=fallback,
    )
