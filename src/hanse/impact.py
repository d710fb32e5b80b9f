"""Environmental impact of one answer: energy, carbon and water, for the route that served it.

Energy: the route's measured energy per token when the catalog gives one, (input + output tokens) x
that x PUE (as Melious describes); otherwise EcoLogits' LLM model (active/total parameters, output
tokens, measured latency, PUE). Carbon: energy x the grid intensity of the provider's country (the
operator's hourly table for that hour when given, else the country's average from EcoLogits' data).
Water: IT energy x (on-site WUE + PUE x the grid's water intensity), EcoLogits' formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from ecologits.impacts import llm

from hanse.config.intensity import HourlyIntensity, intensity_at
from hanse.config.schema import ModelConfig, ProviderConfig, RouteConfig
from hanse.domain import Usage
from hanse.grid import grid_mix

_SIGNIFICANT = 6


@dataclass(frozen=True, slots=True)
class Impact:
    """`environment_impact`, as the response carries it."""

    energy_kwh: float
    carbon_g_co2: float
    water_liters: float
    renewable_percent: float
    pue: float
    provider_id: str
    location: str

    def body(self) -> dict[str, Any]:
        return {
            "energy_kwh": _significant(self.energy_kwh),
            "carbon_g_co2": _significant(self.carbon_g_co2),
            "water_liters": _significant(self.water_liters),
            "renewable_percent": self.renewable_percent,
            "pue": self.pue,
            "provider_id": self.provider_id,
            "location": self.location,
        }


def estimate_impact(
    *,
    provider: ProviderConfig,
    route: RouteConfig,
    model: ModelConfig,
    usage: Usage,
    latency_s: float,
    at: datetime,
    hourly: HourlyIntensity,
) -> Impact:
    """The impact of one request served by `route` at time `at` (UTC)."""
    mix = grid_mix(provider.location)
    energy = _energy_kwh(provider, route, model, usage, latency_s)
    intensity = intensity_at(hourly, provider.location, at)
    carbon = energy * (mix.carbon_g_per_kwh if intensity is None else intensity)
    water = energy / provider.pue * (provider.wue + provider.pue * mix.water_l_per_kwh)
    return Impact(
        energy_kwh=energy,
        carbon_g_co2=carbon,
        water_liters=water,
        renewable_percent=provider.renewable_percent,
        pue=provider.pue,
        provider_id=provider.id,
        location=provider.location,
    )


def no_impact(provider_id: str, location: str) -> Impact:
    """The figures of an answer that consumed nothing (no model ran)."""
    return Impact(0.0, 0.0, 0.0, 100.0, 1.0, provider_id, location)


def _energy_kwh(
    provider: ProviderConfig, route: RouteConfig, model: ModelConfig, usage: Usage, latency_s: float
) -> float:
    if route.energy_kwh_per_token is not None:
        return usage.total_tokens * route.energy_kwh_per_token * provider.pue
    if model.parameters_billion is None or usage.completion_tokens == 0:
        return 0.0
    # EcoLogits' own model functions, called in the order its DAG runs them (the DAG's scheduling
    # and the embodied impacts we do not report cost more than the arithmetic).
    active, total = model.parameters_billion.active, model.parameters_billion.total
    gpus = _gpus(total)
    per_gpu = llm.gpu_energy(
        model_active_parameter_count=active,
        output_token_count=usage.completion_tokens,
        batch_size=llm.BATCH_SIZE,
        gpu_energy_alpha=llm.GPU_ENERGY_ALPHA,
        gpu_energy_beta=llm.GPU_ENERGY_BETA,
        gpu_energy_gamma=llm.GPU_ENERGY_GAMMA,
    )
    latency = llm.generation_latency(
        model_active_parameter_count=active,
        output_token_count=usage.completion_tokens,
        batch_size=llm.BATCH_SIZE,
        latency_alpha=llm.LATENCY_ALPHA,
        latency_beta=llm.LATENCY_BETA,
        latency_gamma=llm.LATENCY_GAMMA,
        request_latency=max(latency_s, 1e-6),
    )
    server = llm.server_energy(
        generation_latency=latency,
        server_power=llm.SERVER_POWER,
        server_gpu_count=llm.SERVER_GPUS,
        gpu_required_count=gpus,
        batch_size=llm.BATCH_SIZE,
    )
    it_energy = llm.request_it_energy(
        server_energy=server, gpu_required_count=gpus, gpu_energy=per_gpu
    )
    return float(llm.request_energy(datacenter_pue=provider.pue, request_it_energy=it_energy))


@cache
def _gpus(total_parameters_billion: float) -> int:
    memory = llm.model_required_memory(
        model_total_parameter_count=total_parameters_billion,
        model_quantization_bits=llm.MODEL_QUANTIZATION_BITS,
    )
    return int(llm.gpu_required_count(model_required_memory=memory, gpu_memory=llm.GPU_MEMORY))


def _significant(value: float) -> float:
    """Keep six significant digits: small figures stay visible rather than rounding to zero."""
    return float(f"{value:.{_SIGNIFICANT}g}")
