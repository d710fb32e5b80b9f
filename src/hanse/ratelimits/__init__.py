"""Rate limits per account: requests and tokens per minute, shared by all the account's keys.

buckets.py  the arithmetic (GCRA: a bucket that refills continuously) and the per-process store
shared.py   the same arithmetic as Lua scripts on Redis, so that N processes enforce one limit
limiter.py  which limits apply, the response headers, AUTH_1028, and what happens when Redis is down
"""

from hanse.ratelimits.limiter import RateLimiter

__all__ = ["RateLimiter"]
