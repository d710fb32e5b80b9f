"""Routing: flavors, ranking, filters, health and failover across a model's providers.

router.py   Router.plan (filter + rank, no provider call) -> Router.complete / Router.stream
filters.py  capabilities, context, the request's `provider` field; INFERENCE_3104
ranking.py  the score formula (price / speed / environment, per flavor)
speed.py    measured TTFT and tokens/s per route (EWMA over a configured prior)
health.py   a circuit breaker per route and Retry-After holds, behind `Health`
attempts.py bounded tries within the time budget; every failure into one error
"""

from hanse.routing.attempts import mid_stream_error
from hanse.routing.router import RoutePlan, Router, Served

__all__ = ["RoutePlan", "Router", "Served", "mid_stream_error"]
