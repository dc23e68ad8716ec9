"""Usage tracking, budgets (policies, alerts, concurrency) and reports, through the real gateway."""

import asyncio
import json
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db.models import Sum

from apps.costs import services as costs
from apps.costs.models import Budget, BudgetAlert, UsageRecord
from apps.llm_gateway import aredis
from apps.llm_gateway.dbwork import run_db  # closes its connection after each job (no pool leak)
from apps.llm_gateway.services import complete, drain, reset_gateway
from apps.llm_gateway.tests.conftest import KB_ANSWER, user_msg
from apps.llm_gateway.types import BudgetExceeded
from conftest import requires_services

# m1: 0.01 / 0.02 CNY per 1k → 1000 in + 500 out = 0.02 CNY per call. The gateway reserves one token per
# prompt character (+4 per message) and max_tokens of output, so PROMPT's reservation is exactly CALL_COST.
USAGE = {"input_tokens": 1000, "output_tokens": 500}
CALL_COST = 0.02
PROMPT = "好" * 996


def budget(**kwargs) -> Budget:
    values = {
        "name": "全局",
        "scope": "global",
        "period": "day",
        "limit": Decimal("0.1"),
        "thresholds": [80, 100],
        "policy": "cheap",
    }
    values.update(kwargs)
    b = Budget.objects.create(**values)
    reset_gateway()
    return b


@requires_services  # replays the usage queue in Redis
async def test_usage_and_cost_recorded_exactly_once_per_call(gw):
    gw.rule({"content": "好的", "usage": USAGE})
    results = await asyncio.gather(*[complete(user_msg(), user={"agent": "a1", "customer": "c1"}) for _ in range(20)])
    assert len({c.call_id for c in results}) == 20
    await drain()
    again = await costs.atrack("p1", "m1", 1000, 500, "a1", call_id=results[0].call_id)
    assert again.duplicate  # a retried track() is not counted twice
    await run_db(_check_exactly_once)


def _check_exactly_once():
    # a redelivered batch (crash between insert and trim) must not count twice either
    redis = aredis.sync_client()
    pending = aredis.key("costs", "pending")
    costs.flush_usage()
    written = list(UsageRecord.objects.values_list("call_id", flat=True)[:5])
    redis.rpush(
        pending,
        *[
            json.dumps(
                {
                    "call_id": c,
                    "at": "2026-01-01T00:00:00+00:00",
                    "provider": "p1",
                    "model": "m1",
                    "in": 1,
                    "out": 1,
                    "cost": 1.0,
                }
            )
            for c in written
        ],
    )
    assert costs.flush_usage() == 5
    assert costs.flush_usage() == 0
    assert UsageRecord.objects.count() == 20
    assert float(UsageRecord.objects.aggregate(s=Sum("cost"))["s"]) == pytest.approx(20 * CALL_COST)
    report = costs.daily_report()
    assert (report["calls"], report["source"]) == (20, "redis")
    assert report["total_cost"] == pytest.approx(20 * CALL_COST)
    assert report["avg_cost"] == pytest.approx(CALL_COST)
    assert report["by_agent"][0]["name"] == "a1" and report["by_agent"][0]["calls"] == 20
    assert report["by_model"][0]["name"] == "p1/m1" and report["by_customer"][0]["calls"] == 20
    # the database view of the same day agrees once Redis no longer has the counters
    redis.delete(aredis.key("costs", "day", report["date"].replace("-", "")))
    from_db = costs.daily_report()
    assert (from_db["source"], from_db["calls"]) == ("database", 20)
    assert from_db["total_cost"] == pytest.approx(20 * CALL_COST)


@requires_services  # concurrent alert writes: the in-memory SQLite of the fallback takes one writer at a time
async def test_budget_degrades_to_cheap_route_at_100_and_alerts_80_once(gw):
    b = await run_db(budget, limit=Decimal("0.1"))  # 5 calls of 0.02
    gw.rule({"content": "好的", "usage": USAGE})
    answers = [await complete(user_msg(PROMPT), max_tokens=500) for _ in range(8)]
    await drain()
    assert [c.route for c in answers] == ["default"] * 5 + ["cheap"] * 3
    assert answers[-1].budget_policy == "cheap" and answers[-1].model == "cheap-m"
    assert [a.outcome for a in answers[-1].attempts][:1] == ["budget"]
    alerts = await run_db(lambda: list(BudgetAlert.objects.filter(budget=b).values_list("threshold", flat=True)))
    assert sorted(alerts) == [80, 100]  # each once, though several calls passed 80 % and were refused
    status = await run_db(costs.check_budget)
    assert status.used_ratio == pytest.approx(1.0) and status.policy == "cheap" and not status.allowed


async def test_budget_kb_only_answers_offline(gw):
    await run_db(budget, limit=Decimal("0.03"), policy="kb_only")
    gw.rule({"content": "好的", "usage": USAGE})
    first = await complete(user_msg(PROMPT + "我想退货"), max_tokens=500)
    second = await complete(user_msg(PROMPT + "我想退货"), max_tokens=500)
    assert not first.offline
    assert (second.offline, second.content, second.budget_policy) == (True, KB_ANSWER, "kb_only")


@pytest.mark.parametrize("policy", ["block", "handoff"])
async def test_budget_block_and_handoff_raise(gw, policy):
    await run_db(budget, limit=Decimal("0.01"), policy=policy)
    with pytest.raises(BudgetExceeded) as exc:
        await complete(user_msg(PROMPT), max_tokens=500)
    assert exc.value.policy == policy and exc.value.budget == "全局"


async def test_scoped_budgets_apply_only_to_their_target(gw, settings):
    settings.LLM_ROUTES = {**settings.LLM_ROUTES, "p2only": [{"provider": "p2", "model": "m2"}]}
    await run_db(budget, name="p1 限额", scope="provider", target="p1", limit=Decimal("0.001"), policy="block")
    await run_db(budget, name="a9 限额", scope="agent", target="a9", limit=Decimal("0.001"), policy="block")
    gw.rule({"content": "好的", "usage": USAGE})
    with pytest.raises(BudgetExceeded) as exc:
        await complete(user_msg(), max_tokens=500)  # p1's budget refuses → block
    assert exc.value.budget == "p1 限额"
    assert (await complete(user_msg(), route="p2only", user="a1", max_tokens=500)).model == "m2"
    with pytest.raises(BudgetExceeded) as exc:
        await complete(user_msg(), route="p2only", user="a9", max_tokens=500)
    assert exc.value.budget == "a9 限额"


async def test_50_concurrent_calls_overshoot_by_at_most_one_call(gw, settings):
    settings.LLM_ROUTES = {"default": [{"provider": "p1", "model": "m1", "max_tokens": 500}]}
    await run_db(budget, limit=Decimal("0.5"), policy="block")  # room for 25 calls
    gw.configure(latency=0.05)
    gw.rule({"content": "好的", "usage": USAGE})
    results = await asyncio.gather(*[complete(user_msg(PROMPT)) for _ in range(50)], return_exceptions=True)
    await drain()
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(ok) + len(refused) == 50 and refused
    spent = sum(c.cost for c in ok)
    assert spent <= 0.5 + CALL_COST + 1e-9
    status = await run_db(costs.check_budget)
    assert status.used == pytest.approx(spent)


def test_cost_report_command_and_admin_page(gw, admin_client, capsys):
    from apps.core import aio

    gw.rule({"content": "好的", "usage": USAGE})
    aio.run(complete(user_msg(), user={"agent": "a1"}))
    aio.run(drain())
    call_command("cost_report")
    out = capsys.readouterr().out
    assert "调用 1 次" in out and "p1/m1" in out
    call_command("cost_report", "--json", "--date", "2020-01-01")
    assert json.loads(capsys.readouterr().out)["calls"] == 0
    page = admin_client.get("/admin/costs/usagerecord/report/")
    assert page.status_code == 200 and "p1/m1" in page.content.decode()
