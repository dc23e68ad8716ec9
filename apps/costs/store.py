"""The atomic Redis side of costs: budget reserve / release, and tracking (daily counters, the durable
usage queue, budget settle and threshold flags) — each one Lua script, so one round trip and atomic
across processes. Without Redis (tests without services) `Local` runs the same logic in-process.

Keys (all under `<CACHE_KEY_PREFIX>:llm:`):
  costs:day:<YYYYMMDD>            hash  <field>:cost|calls|in|out for total, provider:<p>, model:<p>/<m>,
                                        agent:<a>, customer:<c>, route:<r>, unpriced
  costs:seen:<call id>            string, 2 days: a call id is counted once
  costs:pending                   list of usage JSON waiting for the database (flush_usage)
  budget:<id>:<period>            hash  spent, reserved
  budget:<id>:<period>:alert:<t>  flag: threshold t% already alerted this period
"""

import threading

EPSILON = 1e-9  # CNY: float sums of prices must not flip a comparison at the limit
SEEN_TTL = 2 * 86400
DAY_TTL = 100 * 86400
BUDGET_TTL = 62 * 86400

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


class Local:
    """In-process stand-in for the Redis scripts (one process only)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.hashes: dict[str, dict[str, float]] = {}
        self.flags: set[str] = set()
        self.pending: list[str] = []

    def clear(self) -> None:
        with self.lock:
            self.hashes.clear()
            self.flags.clear()
            self.pending.clear()

    def _h(self, k: str) -> dict[str, float]:
        return self.hashes.setdefault(k, {})

    def reserve(self, keys: list[str], est: float, limits: list[float], flags: list[str]) -> list:
        with self.lock:
            for i, k in enumerate(keys):
                h = self._h(k)
                spent = h.get("spent", 0)
                if "e" in flags[i] and (
                    spent + h.get("reserved", 0) + est > limits[i] + EPSILON or spent >= limits[i] - EPSILON
                ):
                    first = 0
                    if "a" in flags[i] and f"{k}:alert:100" not in self.flags:
                        self.flags.add(f"{k}:alert:100")
                        first = 1
                    return [i + 1, str(h.get("spent", 0)), first]
            for k in keys:
                h = self._h(k)
                h["reserved"] = h.get("reserved", 0) + est
            return [0]

    def release(self, keys: list[str], est: float) -> None:
        with self.lock:
            for k in keys:
                h = self._h(k)
                h["reserved"] = h.get("reserved", 0) - est

    def track(
        self,
        seen: str,
        day: str,
        cost: float,
        tin: int,
        tout: int,
        payload: str,
        est: float,
        fields: list[str],
        budget_keys: list[str],
        limits: list[float],
        thresholds: list[str],
    ) -> list:
        with self.lock:
            if seen in self.flags:
                for k in budget_keys:
                    self._h(k)["reserved"] = self._h(k).get("reserved", 0) - est
                return [-1]
            self.flags.add(seen)
            h = self._h(day)
            for f in fields:
                for suffix, value in (("cost", cost), ("calls", 1), ("in", tin), ("out", tout)):
                    h[f"{f}:{suffix}"] = h.get(f"{f}:{suffix}", 0) + value
            self.pending.append(payload)
            out: list = [len(self.pending)]
            for k, limit, th in zip(budget_keys, limits, thresholds, strict=True):
                b = self._h(k)
                b["reserved"] = b.get("reserved", 0) - est
                b["spent"] = spent = b.get("spent", 0) + cost
                crossed = ""
                for t in filter(None, th.split(",")):
                    if limit > 0 and spent + EPSILON >= limit * float(t) / 100 and f"{k}:alert:{t}" not in self.flags:
                        self.flags.add(f"{k}:alert:{t}")
                        crossed += t + ","
                out += [str(spent), crossed]
            return out


local = Local()
