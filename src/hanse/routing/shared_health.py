"""Route health shared through Redis: one circuit breaker per route for every gateway process.

The same state machine as `health.Breaker`, run as Lua scripts on Redis's clock, so a route one
process finds broken is skipped by all of them. Per route: a hash (`state`, `consecutive`,
`opened_at`, `probe_until`, `held_until`) and two sorted sets of the outcomes in the window (all,
and failures) for the failure rate. When Redis does not answer, this process's own breakers
(`InMemoryHealth`) decide until it is back.
"""

from __future__ import annotations

import math
import secrets

from hanse.redislink import RedisLink, RedisUnavailable
from hanse.routing.health import MAX_HOLD_S, STATE_VALUES, BreakerSettings, InMemoryHealth

# Seconds since here, on Redis's clock.
EPOCH = 1_700_000_000

_NOW = """
local t = redis.call('TIME')
local now = (tonumber(t[1]) - tonumber(ARGV[1])) + tonumber(t[2]) / 1000000
local function keep(ttl)
  for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, ttl) end
end
"""

# KEYS: hash. ARGV: epoch, cooldown, ttl. Returns 1 when the route may be called now.
_ADMITS = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'probe_until', 'held_until')
local state = h[1] or 'closed'
local cooldown = tonumber(ARGV[2])
if now < tonumber(h[4] or 0) then return 0 end
if state == 'closed' then return 1 end
if state == 'open' and now < tonumber(h[2] or 0) + cooldown then return 0 end
if state == 'half_open' and now < tonumber(h[3] or 0) then return 0 end
-- A probe that never reports back frees the slot after a cooldown.
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', tostring(now + cooldown))
keep(tonumber(ARGV[3]))
return 1
"""
)

# KEYS: hash, outcomes, failures. ARGV: epoch, ok, member, window, failures in a row,
# failure rate, minimum outcomes, ttl.
_RECORD = (
    _NOW
    + """
local ok = ARGV[2] == '1'
redis.call('ZADD', KEYS[2], now, ARGV[3])
if not ok then redis.call('ZADD', KEYS[3], now, ARGV[3]) end
local horizon = '(' .. tostring(now - tonumber(ARGV[4]))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', horizon)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', horizon)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ok then
  redis.call('HSET', KEYS[1], 'consecutive', 0)
  if state ~= 'closed' then
    redis.call('HSET', KEYS[1], 'state', 'closed')
    redis.call('DEL', KEYS[2], KEYS[3])
  end
else
  local consecutive = redis.call('HINCRBY', KEYS[1], 'consecutive', 1)
  local total = redis.call('ZCARD', KEYS[2])
  local failed = redis.call('ZCARD', KEYS[3])
  local tripped = consecutive >= tonumber(ARGV[5])
    or (total >= tonumber(ARGV[7]) and failed / total >= tonumber(ARGV[6]))
  if state ~= 'closed' or tripped then
    redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', tostring(now))
  end
end
keep(tonumber(ARGV[8]))
return 1
"""
)

# KEYS: hash. ARGV: epoch, seconds to hold, ttl.
_HOLD = (
    _NOW
    + """
local hold_end = now + tonumber(ARGV[2])
if hold_end > tonumber(redis.call('HGET', KEYS[1], 'held_until') or 0) then
  redis.call('HSET', KEYS[1], 'held_until', tostring(hold_end))
end
keep(tonumber(ARGV[3]))
return 1
"""
)

# KEYS: hashes. Returns each one's state.
_STATES = """
local states = {}
for i, key in ipairs(KEYS) do states[i] = redis.call('HGET', key, 'state') or 'closed' end
return states
"""


class RedisHealth:
    """`Health` for every process at once, backed by Redis; per process while Redis is away."""

    def __init__(self, link: RedisLink, settings: BreakerSettings) -> None:
        self._link = link
        self._settings = settings
        self._local = InMemoryHealth(settings)
        self._known: set[str] = set()
        # Long enough to outlive a hold, a cooldown and the window; an idle route's keys then go.
        self._ttl = math.ceil(max(MAX_HOLD_S, settings.cooldown_s, settings.window_s)) + 60
        self._admits = link.script(_ADMITS)
        self._record = link.script(_RECORD)
        self._hold = link.script(_HOLD)
        self._states = link.script(_STATES)

    async def admits(self, key: str) -> bool:
        self._known.add(key)
        args = [EPOCH, self._settings.cooldown_s, self._ttl]
        try:
            return bool(await self._link.run(self._admits, [self._hash(key)], args))
        except RedisUnavailable:
            return await self._local.admits(key)

    async def succeeded(self, key: str) -> None:
        try:
            await self._outcome(key, True)
        except RedisUnavailable:
            await self._local.succeeded(key)

    async def failed(self, key: str) -> None:
        try:
            await self._outcome(key, False)
        except RedisUnavailable:
            await self._local.failed(key)

    async def rate_limited(self, key: str, retry_after_s: float) -> None:
        args = [EPOCH, min(retry_after_s, MAX_HOLD_S), self._ttl]
        try:
            await self._link.run(self._hold, [self._hash(key)], args)
        except RedisUnavailable:
            await self._local.rate_limited(key, retry_after_s)

    async def states(self) -> list[tuple[str, float]]:
        keys = sorted(self._known)
        if not keys:
            return []
        try:
            states = await self._link.run(self._states, [self._hash(k) for k in keys], [])
        except RedisUnavailable:
            return await self._local.states()
        return [(key, STATE_VALUES[state]) for key, state in zip(keys, states, strict=True)]

    async def _outcome(self, key: str, ok: bool) -> None:
        settings = self._settings
        args = [
            EPOCH,
            1 if ok else 0,
            secrets.token_hex(8),
            settings.window_s,
            settings.failures,
            settings.failure_rate,
            settings.min_requests,
            self._ttl,
        ]
        base = self._hash(key)
        await self._link.run(self._record, [base, base + ":outcomes", base + ":failures"], args)

    def _hash(self, key: str) -> str:
        return f"{self._link.prefix}health:{{{key}}}"
