"""Reads of the gateway (sync: monitoring, admin)."""

import time

from apps.core import redis
from apps.llm_gateway import breaker


def circuit_states() -> dict[str, str]:
    """{"provider/model": "closed" | "half_open" | "open"} for every circuit with recent failures (a circuit
    that never failed, or recovered, is not listed: it is closed)."""
    now = time.time()
    client = redis.client()
    prefix = breaker.state_key_prefix()
    states: dict[str, str] = {}
    for raw in client.scan_iter(match=prefix + "*", count=500):
        key = raw.decode() if isinstance(raw, bytes) else raw
        state, until = client.hmget(key, "s", "u")
        provider, model = key[len(prefix) :].split(":", 1)
        states[f"{provider}/{model}"] = breaker.state_name(int(state or 0), float(until or 0), now)
    return states
