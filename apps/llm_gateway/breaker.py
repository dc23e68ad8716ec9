"""Circuit breaker per (provider, model), shared by every process through Redis.

closed → (LLM_CIRCUIT_FAILURES failures within LLM_CIRCUIT_WINDOW s) → open for LLM_CIRCUIT_COOLDOWN s →
half-open: exactly one caller (across processes) gets to probe; its success closes the circuit, its
failure opens it again for another cool-down (a probe that never reports back frees the slot after
LLM_CIRCUIT_PROBE_TIMEOUT s). Each transition is one Lua script call, so it is atomic across processes.
The state of every circuit that is not plainly closed: `apps.llm_gateway.selectors.circuit_states()`.
"""

import time

from django.conf import settings

from apps.core import redis

CLOSED, HALF_OPEN, OPEN = 0, 1, 2
STATE_NAMES = {CLOSED: "closed", HALF_OPEN: "half_open", OPEN: "open"}

# KEYS[1] = state hash; ARGV = op, now, threshold, window, cooldown, probe_timeout
_LUA = """
local k = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])
local v = redis.call('HMGET', k, 's', 'f', 'w', 'u')
local s = tonumber(v[1] or '0')
local f = tonumber(v[2] or '0')
local w = tonumber(v[3] or '0')
local u = tonumber(v[4] or '0')
local cooldown = tonumber(ARGV[5])
local ttl = math.ceil(math.max(tonumber(ARGV[4]), cooldown) * 10 + 60)
if op == 'allow' then
  if s == 0 then return {1, 0, f} end
  if now < u then return {0, s, f} end
  redis.call('HSET', k, 's', 1, 'u', now + tonumber(ARGV[6]))
  redis.call('EXPIRE', k, ttl)
  return {1, 1, f}
elseif op == 'success' then
  if s ~= 0 or f ~= 0 then redis.call('DEL', k) end
  return {1, 0, 0}
else
  if s == 1 then
    redis.call('HSET', k, 's', 2, 'u', now + cooldown, 'f', 0)
    redis.call('EXPIRE', k, ttl)
    return {1, 2, 0}
  end
  if s == 2 then return {1, 2, f} end
  if now - w > tonumber(ARGV[4]) then f = 0; w = now end
  f = f + 1
  if f >= tonumber(ARGV[3]) then
    redis.call('HSET', k, 's', 2, 'u', now + cooldown, 'f', 0, 'w', w)
    redis.call('EXPIRE', k, ttl)
    return {1, 2, f}
  end
  redis.call('HSET', k, 'f', f, 'w', w)
  redis.call('EXPIRE', k, ttl)
  return {1, 0, f}
end
"""


def state_key(provider: str, model: str) -> str:
    return redis.key("llm", "cb", provider, model)


def state_key_prefix() -> str:
    """The prefix of every circuit's state key (followed by "<provider>:<model>")."""
    return redis.key("llm", "cb", "")


def _args(op: str) -> list:
    return [
        op,
        time.time(),
        settings.LLM_CIRCUIT_FAILURES,
        settings.LLM_CIRCUIT_WINDOW,
        settings.LLM_CIRCUIT_COOLDOWN,
        settings.LLM_CIRCUIT_PROBE_TIMEOUT,
    ]


async def op(provider: str, model: str, name: str) -> list[int]:
    """Run `name` ("allow" | "success" | "failure"); returns [allowed, state, failures]."""
    return [int(x) for x in await redis.script(_LUA, [state_key(provider, model)], _args(name))]


def state_name(state: int, until: float, now: float) -> str:
    if state == OPEN and now >= until:
        return "half_open"  # cool-down over: the next call probes
    return STATE_NAMES.get(state, "closed")
