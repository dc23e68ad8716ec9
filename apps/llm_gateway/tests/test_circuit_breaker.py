"""The circuit breaker per (provider, model), shared through Redis, and what monitoring reads of it."""

import asyncio

from django.conf import settings

from apps.core import aio
from apps.llm_gateway import breaker
from apps.llm_gateway.selectors import circuit_states
from apps.llm_gateway.services import complete
from apps.llm_gateway.tests.conftest import user_msg


async def test_circuit_opens_after_repeated_failures_and_recovers(gw):
    gw.fail("500", model="m1")
    await complete(user_msg())  # 3 failures → open (LLM_CIRCUIT_FAILURES = 3)
    assert circuit_states()["p1/m1"] == "open"
    before = len(gw.requests(model="m1"))
    c = await complete(user_msg())
    assert [a.outcome for a in c.attempts] == ["circuit_open", "ok"] and c.model == "m2"
    assert len(gw.requests(model="m1")) == before  # skipped: no request reached m1
    gw.heal()
    await asyncio.sleep(settings.LLM_CIRCUIT_COOLDOWN + 0.1)
    assert circuit_states()["p1/m1"] == "half_open"
    c = await complete(user_msg())  # the probe
    assert c.model == "m1" and [a.outcome for a in c.attempts] == ["ok"]
    assert "p1/m1" not in circuit_states()  # closed again
    await aio.drain()


async def test_half_open_failed_probe_reopens(gw):
    gw.fail("500", model="m1")
    await complete(user_msg())
    await asyncio.sleep(settings.LLM_CIRCUIT_COOLDOWN + 0.1)
    c = await complete(user_msg())  # probe fails → open again, no retries on an open circuit
    assert [a.outcome for a in c.attempts][:1] == ["error"] and c.model == "m2"
    assert circuit_states()["p1/m1"] == "open"
    await aio.drain()


async def test_a_refused_request_does_not_count_against_the_model(gw):
    gw.fail("401", model="m1")
    for _ in range(settings.LLM_CIRCUIT_FAILURES + 1):
        await complete(user_msg())
    assert circuit_states() == {}  # 4xx: our request or our key, the model is fine
    await aio.drain()


async def test_only_one_caller_probes_a_half_open_circuit(gw):
    for _ in range(settings.LLM_CIRCUIT_FAILURES):
        await breaker.op("p1", "m1", "failure")
    await asyncio.sleep(settings.LLM_CIRCUIT_COOLDOWN + 0.1)
    admitted = await asyncio.gather(*[breaker.op("p1", "m1", "allow") for _ in range(10)])
    assert sorted(allowed for allowed, _state, _failures in admitted) == [0] * 9 + [1]
    assert circuit_states() == {"p1/m1": "half_open"}
