"""Circuit breaker per (provider, model), shared by every process through Redis.

closed → (LLM_CIRCUIT_FAILURES failures within LLM_CIRCUIT_WINDOW s) → open for LLM_CIRCUIT_COOLDOWN s →
half-open: exactly one caller (across processes) gets to probe; its success closes the circuit, its
failure opens it again for another cool-down (a probe that never reports back frees the slot after
LLM_CIRCUIT_PROBE_TIMEOUT s). Each transition is one Lua script call, so it is atomic across processes.
Without Redis (tests without services) the same state machine runs in-process.
"""

import threading
import time

from django.conf import settings

from apps.llm_gateway import aredis

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

_local: dict[str, list[float]] = {}
_local_lock = threading.Lock()


def state_key(provider: str, model: str) -> str:
    return aredis.key("cb", provider, model)


def _args(op: str) -> list:
    return [
        op,
        time.time(),
        settings.LLM_CIRCUIT_FAILURES,
        settings.LLM_CIRCUIT_WINDOW,
        settings.LLM_CIRCUIT_COOLDOWN,
        settings.LLM_CIRCUIT_PROBE_TIMEOUT,
    ]


def _local_op(k: str, op: str, now: float) -> list[int]:
    """The Lua script's state machine, in-process."""
    with _local_lock:
        s, f, w, u = _local.get(k, [CLOSED, 0, 0.0, 0.0])
        cooldown = settings.LLM_CIRCUIT_COOLDOWN
        if op == "allow":
            if s == CLOSED:
                return [1, 0, f]
            if now < u:
                return [0, s, f]
            _local[k] = [HALF_OPEN, f, w, now + settings.LLM_CIRCUIT_PROBE_TIMEOUT]
            return [1, 1, f]
        if op == "success":
            _local.pop(k, None)
            return [1, 0, 0]
        if s == HALF_OPEN:
            _local[k] = [OPEN, 0, w, now + cooldown]
            return [1, 2, 0]
        if s == OPEN:
            return [1, 2, f]
        if now - w > settings.LLM_CIRCUIT_WINDOW:
            f, w = 0, now
        f += 1
        if f >= settings.LLM_CIRCUIT_FAILURES:
            _local[k] = [OPEN, 0, w, now + cooldown]
            return [1, 2, f]
        _local[k] = [CLOSED, f, w, 0.0]
        return [1, 0, f]


async def op(provider: str, model: str, name: str) -> list[int]:
    """Run `name` ("allow" | "success" | "failure"); returns [allowed, state, failures]."""
    k = state_key(provider, model)
    redis = aredis.client()
    if redis is None:
        return _local_op(k, name, time.time())
    return [int(x) for x in await aredis.script(_LUA, [k], _args(name))]


def states() -> dict[str, str]:
    """{"provider/model": "closed" | "open" | "half_open"} for every circuit that is not plainly closed."""
    now = time.time()
    out: dict[str, str] = {}
    redis = aredis.sync_client()
    if redis is None:
        with _local_lock:
            items = [(k, v) for k, v in _local.items()]
        for k, (s, _f, _w, u) in items:
            provider, model = k.split(":cb:", 1)[1].split(":", 1)
            out[f"{provider}/{model}"] = _name(s, u, now)
        return out
    prefix = aredis.key("cb", "")
    for raw in redis.scan_iter(match=prefix + "*", count=500):
        k = raw.decode() if isinstance(raw, bytes) else raw
        values = redis.hmget(k, "s", "u")
        s = int(values[0] or 0)
        u = float(values[1] or 0)
        provider, model = k[len(prefix) :].split(":", 1)
        out[f"{provider}/{model}"] = _name(s, u, now)
    return out


def _name(s: int, until: float, now: float) -> str:
    if s == OPEN and now >= until:
        return "half_open"  # cool-down over: the next call probes
    return STATE_NAMES.get(s, "closed")


def reset_local() -> None:
    with _local_lock:
        _local.clear()
