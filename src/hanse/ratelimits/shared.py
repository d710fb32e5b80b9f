"""The buckets of `buckets.py` on Redis: one Lua script per operation, so that every process
reads and writes a bucket atomically, on Redis's clock (hosts' clocks need not agree).

Keys: `{prefix}rl:{<account id>}:requests` and `...:tokens`, each holding its `tat` in seconds
since EPOCH; they expire once the bucket is full again. The braces keep an account's keys in one
Redis Cluster slot.
"""

from __future__ import annotations

from hanse.config.ratelimits import AccountLimits
from hanse.ratelimits.buckets import PERIOD_S, Decision
from hanse.redislink import RedisLink

# Seconds are counted from here, so a float keeps microseconds for decades.
EPOCH = 1_700_000_000

_NOW = """
local t = redis.call('TIME')
local now = (tonumber(t[1]) - tonumber(ARGV[1])) + tonumber(t[2]) / 1000000
local period = tonumber(ARGV[2])
local function store(key, tat)
  redis.call('SET', key, string.format('%.17g', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
end
local function over(ahead, limit)
  if limit == 0 then return false end
  local interval = period / limit
  return ahead + interval > period + math.min(interval / 2, 0.001), ahead + interval - period
end
"""

# ARGV: epoch, period, requests per minute, tokens per minute (0: none). Same rule as `decide`.
_TAKE = (
    _NOW
    + """
local rl, tl = tonumber(ARGV[3]), tonumber(ARGV[4])
local allowed, retry = 1, 0
local rahead = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now) - now
local tahead = math.max(tonumber(redis.call('GET', KEYS[2]) or 0), now) - now
for _, bucket in ipairs({{rahead, rl}, {tahead, tl}}) do
  local refused, wait = over(bucket[1], bucket[2])
  if refused then allowed, retry = 0, math.max(retry, wait) end
end
if allowed == 1 and rl > 0 then
  rahead = rahead + period / rl
  store(KEYS[1], now + rahead)
end
return {allowed, string.format('%.17g', rahead), string.format('%.17g', tahead),
  string.format('%.17g', retry)}
"""
)

# ARGV: epoch, period, tokens per minute, tokens spent.
_SPEND = (
    _NOW
    + """
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
store(KEYS[1], tat + tonumber(ARGV[4]) * period / tonumber(ARGV[3]))
return 1
"""
)


class SharedBuckets:
    """Every account's buckets in Redis; raises RedisUnavailable when Redis does not answer."""

    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._take = link.script(_TAKE)
        self._spend = link.script(_SPEND)

    async def take(self, account_id: int, limits: AccountLimits) -> Decision:
        allowed, requests_ahead, tokens_ahead, retry = await self._link.run(
            self._take,
            [self._key(account_id, "requests"), self._key(account_id, "tokens")],
            [EPOCH, PERIOD_S, limits.requests_per_minute, limits.tokens_per_minute],
        )
        return Decision(bool(allowed), float(requests_ahead), float(tokens_ahead), float(retry))

    async def spend(self, account_id: int, limits: AccountLimits, tokens: int) -> None:
        await self._link.run(
            self._spend,
            [self._key(account_id, "tokens")],
            [EPOCH, PERIOD_S, limits.tokens_per_minute, tokens],
        )

    def _key(self, account_id: int, kind: str) -> str:
        return f"{self._link.prefix}rl:{{{account_id}}}:{kind}"
