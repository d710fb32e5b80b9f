"""Live speed per route: time to first token and tokens per second, smoothed (EWMA).

Before a route has answered, its provider's configured prior stands in. A streamed answer measures
both numbers; a whole answer only its total time, which is split with the route's current TTFT
estimate (at most half the total goes to the first token).
"""

from __future__ import annotations

from hanse.config.schema import ProviderConfig
from hanse.routing.ranking import Speed


def prior(provider: ProviderConfig) -> Speed:
    return Speed(ttft_s=provider.prior_ttft_ms / 1000, tokens_per_s=provider.prior_tokens_per_s)


def smoothed(old: float, sample: float, smoothing: float) -> float:
    """Exponentially weighted moving average: `smoothing` is the weight of the new sample."""
    return old + smoothing * (sample - old)


class SpeedBook:
    """Speed estimates per route key, in this process."""

    def __init__(self, smoothing: float) -> None:
        self._smoothing = smoothing
        self._speeds: dict[str, Speed] = {}

    def estimate(self, key: str, provider: ProviderConfig) -> Speed:
        return self._speeds.get(key) or prior(provider)

    def record_stream(
        self, key: str, provider: ProviderConfig, ttft_s: float, tokens: int, rest_s: float
    ) -> None:
        """A streamed answer: first event after `ttft_s`, then `tokens` in `rest_s` seconds."""
        self._update(key, provider, ttft_s, tokens / rest_s if tokens and rest_s > 0 else None)

    def record_whole(self, key: str, provider: ProviderConfig, total_s: float, tokens: int) -> None:
        """A whole answer of `tokens` after `total_s` seconds."""
        ttft_s = min(self.estimate(key, provider).ttft_s, total_s / 2)
        rest_s = total_s - ttft_s
        self._update(key, provider, ttft_s, tokens / rest_s if tokens and rest_s > 0 else None)

    def _update(
        self, key: str, provider: ProviderConfig, ttft_s: float, tokens_per_s: float | None
    ) -> None:
        old = self.estimate(key, provider)
        rate = old.tokens_per_s
        if tokens_per_s is not None:
            rate = smoothed(rate, tokens_per_s, self._smoothing)
        self._speeds[key] = Speed(smoothed(old.ttft_s, ttft_s, self._smoothing), rate)
