"""The atomic Redis side of costs: budget reserve / release, and tracking (daily counters, the durable
usage queue, budget settle and threshold flags) — each one Lua script, so one round trip and atomic
across processes.

Keys (all under `<CACHE_KEY_PREFIX>:llm:`):
  costs:day:<YYYYMMDD>            hash  <field>:cost|calls|in|out for total, provider:<p>, model:<p>/<m>,
                                        agent:<a>, customer:<c>, route:<r>, unpriced
  costs:seen:<call id>            string, 2 days: a call id is counted once
  costs:pending                   list of usage JSON waiting for the database (flush_usage)
  budget:<id>:<period>            hash  spent, reserved
  budget:<id>:<period>:alert:<t>  flag: threshold t% already alerted this period
"""

from datetime import datetime

from django.utils import timezone

from apps.core import redis

EPSILON = 1e-9  # CNY: float sums of prices must not flip a comparison at the limit
SEEN_TTL = 2 * 86400
DAY_TTL = 100 * 86400
BUDGET_TTL = 62 * 86400

MONTHLY = "month"


def key(*parts: object) -> str:
    return redis.key("llm", *parts)


def period_key(period: str, now: datetime | None = None) -> str:
    local = timezone.localtime(now or timezone.now())
    return local.strftime("%Y%m" if period == MONTHLY else "%Y%m%d")


def budget_key(budget, now: datetime | None = None) -> str:
    """The Redis hash (spent, reserved) of `budget` (a costs.config.BudgetConf) in its current period."""
    return key("budget", budget.id, period_key(budget.period, now))


def day_key(day: str) -> str:
    """The day's counters hash; `day` is YYYYMMDD."""
    return key("costs", "day", day)


def seen_key(call_id: str) -> str:
    return key("costs", "seen", call_id)


def pending_key() -> str:
    return key("costs", "pending")


def flush_lock_key() -> str:
    return key("costs", "flush-lock")


RESERVE_LUA = """
local est = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  local spent = tonumber(v[1] or '0')
  local reserved = tonumber(v[2] or '0')
  local flags = ARGV[2 + 2 * i]
  local limit = tonumber(ARGV[1 + 2 * i])
  if string.find(flags, 'e') and (spent + reserved + est > limit + 1e-9 or spent >= limit - 1e-9) then
    local first = 0
    if string.find(flags, 'a') and redis.call('SET', KEYS[i] .. ':alert:100', 1, 'NX', 'EX', ttl) then first = 1 end
    return {i, tostring(spent), first}
  end
end
for i = 1, #KEYS do
  redis.call('HINCRBYFLOAT', KEYS[i], 'reserved', est)
  redis.call('EXPIRE', KEYS[i], ttl)
end
return {0}
"""

RELEASE_LUA = """
for i = 1, #KEYS do redis.call('HINCRBYFLOAT', KEYS[i], 'reserved', -tonumber(ARGV[1])) end
return 1
"""

TRACK_LUA = """
local est = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local nf = tonumber(ARGV[7])
if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', tonumber(ARGV[8 + nf])) then
  if est > 0 then
    for i = 4, #KEYS do redis.call('HINCRBYFLOAT', KEYS[i], 'reserved', -est) end
  end
  return {-1}
end
local cost = tonumber(ARGV[1])
local tin = tonumber(ARGV[2])
local tout = tonumber(ARGV[3])
for j = 1, nf do
  local f = ARGV[7 + j]
  redis.call('HINCRBYFLOAT', KEYS[2], f .. ':cost', cost)
  redis.call('HINCRBY', KEYS[2], f .. ':calls', 1)
  redis.call('HINCRBY', KEYS[2], f .. ':in', tin)
  redis.call('HINCRBY', KEYS[2], f .. ':out', tout)
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[9 + nf]))
local out = {redis.call('RPUSH', KEYS[3], ARGV[4])}
local base = 9 + nf
for i = 4, #KEYS do
  local b = i - 3
  local k = KEYS[i]
  local limit = tonumber(ARGV[base + 2 * b - 1])
  if est > 0 then redis.call('HINCRBYFLOAT', k, 'reserved', -est) end
  local spent = tonumber(redis.call('HINCRBYFLOAT', k, 'spent', cost))
  redis.call('EXPIRE', k, ttl)
  local crossed = ''
  for t in string.gmatch(ARGV[base + 2 * b], '[^,]+') do
    if limit > 0 and spent + 1e-9 >= limit * tonumber(t) / 100 then
      if redis.call('SET', k .. ':alert:' .. t, 1, 'NX', 'EX', ttl) then crossed = crossed .. t .. ',' end
    end
  end
  table.insert(out, tostring(spent))
  table.insert(out, crossed)
end
return out
"""
