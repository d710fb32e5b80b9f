"""Prometheus metrics: requests, latency and overhead, tokens, energy and carbon, circuit states.

One registry per process (a scrape reaches one worker and shows that worker); `/metrics` renders it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from hanse.domain import Usage
from hanse.impact import Impact

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    """The gateway's counters and histograms. The children of the per-request label sets are
    kept (`labels()` costs a lock and a validation each call); those sets are bounded (route
    templates, catalog ids, status codes), so the caches are too."""

    def __init__(self) -> None:
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
        self.failed_attempts = Counter(
            "hanse_failed_attempts",
            "Provider attempts that failed, whether failover rescued the request or not",
            ["model", "route", "reason"],
            registry=self.registry,
        )
        self.circuits = Gauge(
            "hanse_circuit_state",
            "Circuit breaker per route: 0 closed, 0.5 half-open, 1 open",
            ["route"],
            registry=self.registry,
        )
        self._requests: dict[tuple[str, str, str, str], tuple[Any, Any, Any]] = {}
        self._answers: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}

    def request(
        self, path: str, model: str, route: str, status: str, elapsed_s: float, overhead_s: float
    ) -> None:
        """Count one answered request, its latency and the gateway's part of it."""
        key = (path, model, route, status)
        children = self._requests.get(key)
        if children is None:
            children = (
                self.requests.labels(*key),
                self.latency.labels(path),
                self.overhead.labels(path),
            )
            self._requests[key] = children
        count, latency, overhead = children
        count.inc()
        latency.observe(elapsed_s)
        overhead.observe(overhead_s)

    def answered(self, model: str, route: str, usage: Usage, impact: Impact | None) -> None:
        """Count what one answer used."""
        children = self._answers.get((model, route))
        if children is None:
            children = (
                self.tokens.labels(model, route, "prompt"),
                self.tokens.labels(model, route, "completion"),
                self.energy.labels(model, route),
                self.carbon.labels(model, route),
            )
            self._answers[(model, route)] = children
        prompt, completion, energy, carbon = children
        prompt.inc(usage.prompt_tokens)
        completion.inc(usage.completion_tokens)
        if impact is not None:
            energy.inc(impact.energy_kwh)
            carbon.inc(impact.carbon_g_co2)

    def render(self, circuit_states: Iterable[tuple[str, float]]) -> bytes:
        """The exposition text, with the circuit states as they are now."""
        for route, state in circuit_states:
            self.circuits.labels(route).set(state)
        return generate_latest(self.registry)
