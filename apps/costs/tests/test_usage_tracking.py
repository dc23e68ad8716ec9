"""Usage tracking: every call counted exactly once (in Redis, then in the usage records), whoever calls."""

import asyncio
import json
from decimal import Decimal

import pytest
from django.db.models import Sum
from redis.exceptions import ConnectionError as RedisConnectionError

from apps.core import aio, redis
from apps.core.db import run_db
from apps.costs import services as costs
from apps.costs import store
from apps.costs.models import UsageRecord
from apps.costs.selectors import check_budget, daily_report
from apps.costs.tests.factories import BudgetFactory
from apps.llm_gateway.services import complete
from apps.llm_gateway.tests.conftest import user_msg

USAGE = {"input_tokens": 1000, "output_tokens": 500}
CALL_COST = 0.02  # m1: 0.01 / 0.02 CNY per 1k → 1000 in + 500 out


async def test_each_call_is_counted_once_even_when_tracked_again(gw):
    gw.rule({"content": "好的", "usage": USAGE})
    results = await asyncio.gather(*[complete(user_msg(), user={"agent": "a1", "customer": "c1"}) for _ in range(20)])
    assert len({c.call_id for c in results}) == 20
    await aio.drain()
    again = await costs.track("p1", "m1", 1000, 500, "a1", call_id=results[0].call_id)
    assert again.duplicate  # a retried track() is not counted twice
    assert await run_db(costs.flush_usage) == 20
    report = await run_db(daily_report)
    assert (report["calls"], report["total_cost"]) == (20, pytest.approx(20 * CALL_COST))
    assert report["by_agent"][0]["name"] == "a1" and report["by_customer"][0]["calls"] == 20


async def test_a_redelivered_usage_batch_is_not_written_twice(gw):
    gw.rule({"content": "好的", "usage": USAGE})
    for _ in range(5):
        await complete(user_msg())
    await aio.drain()
    await run_db(costs.flush_usage)
    await run_db(_requeue_written_records)  # a crash between the insert and the trim
    assert await run_db(costs.flush_usage) == 5
    assert await run_db(costs.flush_usage) == 0
    total = await run_db(lambda: UsageRecord.objects.aggregate(n=Sum("input_tokens"), cost=Sum("cost")))
    assert (total["n"], float(total["cost"])) == (5000, pytest.approx(5 * CALL_COST))


def _requeue_written_records() -> None:
    payload = {"at": "2026-01-01T00:00:00+00:00", "provider": "p1", "model": "m1", "in": 1, "out": 1, "cost": 1.0}
    items = [
        json.dumps({**payload, "call_id": call_id}) for call_id in UsageRecord.objects.values_list("call_id", flat=True)
    ]
    redis.client().rpush(store.pending_key(), *items)


async def test_a_call_made_outside_the_gateway_is_charged_to_its_budgets(gw):
    await run_db(BudgetFactory.create, limit=Decimal("0.05"), policy="block")
    tracked = await costs.track("p1", "m1", 1000, 500, {"agent": "a7"}, kind="embedding", route="manual")
    assert (tracked.cost, tracked.price_known, tracked.duplicate) == (pytest.approx(CALL_COST), True, False)
    status = await run_db(check_budget)
    assert status.used == pytest.approx(CALL_COST) and status.allowed
    report = await run_db(daily_report)
    assert [row["name"] for row in report["by_route"]] == ["manual"]
    assert report["by_agent"][0]["name"] == "a7"


async def test_an_unpriced_model_is_charged_the_default_price_and_flagged(gw, settings):
    tracked = await costs.track("p9", "mystery", 1000, 1000)
    assert not tracked.price_known
    default = settings.COST_DEFAULT_INPUT_PER_1K + settings.COST_DEFAULT_OUTPUT_PER_1K
    assert tracked.cost == pytest.approx(default)
    await run_db(costs.flush_usage)
    record = await run_db(UsageRecord.objects.get)
    assert record.price_known is False
    report = await run_db(daily_report)
    assert (report["unpriced_calls"], report["unpriced_cost"]) == (1, pytest.approx(default))


async def test_a_redis_hiccup_while_tracking_loses_nothing(gw, monkeypatch):
    real_script, failures = redis.script, []

    async def flaky_script(source, keys, args):
        if source == store.TRACK_LUA and not failures:
            failures.append(1)
            raise RedisConnectionError("connection reset")
        return await real_script(source, keys, args)

    monkeypatch.setattr(redis, "script", flaky_script)
    tracked = await costs.track("p1", "m1", 1000, 500, "a1")
    assert failures and not tracked.duplicate
    assert (await run_db(daily_report))["calls"] == 1
