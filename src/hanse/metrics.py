"""Prometheus metrics: requests, latency and overhead, tokens, energy and carbon, circuit states.

One registry per process (a scrape of one worker shows that worker); `/metrics` renders it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    """The gateway's counters and histograms."""

    def __init__(self, circuit_states: Callable[[], Iterable[tuple[str, float]]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hanse_requests",
            "Requests answered",
            ["path", "model", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hanse_request_seconds",
            "Time to the response headers",
            ["path"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.overhead = Histogram(
            "hanse_overhead_seconds",
            "Time spent in the gateway, the provider's wait excluded",
            ["path"],
            buckets=_OVERHEAD_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "hanse_tokens", "Tokens served", ["model", "route", "kind"], registry=self.registry
        )
        self.energy = Counter(
            "hanse_energy_kwh",
            "Estimated energy of the answers",
            ["model", "route"],
            registry=self.registry,
        )
        self.carbon = Counter(
            "hanse_carbon_g_co2",
            "Estimated emissions of the answers",
            ["model", "route"],
            registry=self.registry,
        )
        self.registry.register(_CircuitCollector(circuit_states))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CircuitCollector(Collector):
    """Circuit-breaker states read at scrape time: 0 closed, 0.5 half-open, 1 open."""

    def __init__(self, states: Callable[[], Iterable[tuple[str, float]]]) -> None:
        self._states = states

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "hanse_circuit_state",
            "Circuit breaker per route: 0 closed, 0.5 half-open, 1 open",
            labels=["route"],
        )
        for route, state in self._states():
            family.add_metric([route], state)
        yield family
