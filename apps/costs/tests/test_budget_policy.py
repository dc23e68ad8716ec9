"""Budgets through the real gateway: reservations never overshoot, each policy does what it says, scopes
apply only to their target, and a change to a budget applies at once."""

import asyncio
from decimal import Decimal

import pytest

from apps.core import aio
from apps.core.db import run_db
from apps.costs import services as costs
from apps.costs.models import Budget, BudgetAlert
from apps.costs.selectors import check_budget
from apps.costs.tests.factories import BudgetFactory
from apps.llm_gateway.services import complete
from apps.llm_gateway.tests.conftest import KB_ANSWER, user_msg
from apps.llm_gateway.types import BudgetExceeded

# m1: 0.01 / 0.02 CNY per 1k → 1000 in + 500 out = 0.02 CNY per call. The gateway reserves one token per
# prompt character (+4 per message) and max_tokens of output, so PROMPT's reservation is exactly CALL_COST.
USAGE = {"input_tokens": 1000, "output_tokens": 500}
CALL_COST = 0.02
PROMPT = "好" * 996


async def test_budget_degrades_to_cheap_route_at_100_and_alerts_80_once(gw):
    b = await run_db(BudgetFactory.create, limit=Decimal("0.1"))  # 5 calls of 0.02
    gw.rule({"content": "好的", "usage": USAGE})
    answers = [await complete(user_msg(PROMPT), max_tokens=500) for _ in range(8)]
    await aio.drain()
    assert [c.route for c in answers] == ["default"] * 5 + ["cheap"] * 3
    assert answers[-1].budget_policy == "cheap" and answers[-1].model == "cheap-m"
    assert [a.outcome for a in answers[-1].attempts][:1] == ["budget"]
    alerts = await run_db(lambda: list(BudgetAlert.objects.filter(budget=b).values_list("threshold", flat=True)))
    assert sorted(alerts) == [80, 100]  # each once, though several calls passed 80 % and were refused
    status = await run_db(check_budget)
    assert status.used_ratio == pytest.approx(1.0) and status.policy == "cheap" and not status.allowed


async def test_a_cheap_budget_exhausted_on_the_cheap_route_itself_answers_offline(gw):
    await run_db(BudgetFactory.create, limit=Decimal("0.001"))
    await costs.track("p1", "m1", 1000, 500)  # 0.02 CNY: over the limit
    c = await complete(user_msg("我想退货"), route="cheap")
    assert (c.offline, c.offline_reason, c.budget_policy, c.content) == (True, "budget", "cheap", KB_ANSWER)
    assert gw.requests() == []


async def test_budget_kb_only_answers_offline(gw):
    await run_db(BudgetFactory.create, limit=Decimal("0.03"), policy="kb_only")
    gw.rule({"content": "好的", "usage": USAGE})
    first = await complete(user_msg(PROMPT + "我想退货"), max_tokens=500)
    second = await complete(user_msg(PROMPT + "我想退货"), max_tokens=500)
    assert not first.offline
    assert (second.offline, second.content, second.budget_policy) == (True, KB_ANSWER, "kb_only")
    await aio.drain()


@pytest.mark.parametrize("policy", ["block", "handoff"])
async def test_budget_block_and_handoff_raise(gw, policy):
    await run_db(BudgetFactory.create, limit=Decimal("0.01"), policy=policy)
    with pytest.raises(BudgetExceeded) as exc:
        await complete(user_msg(PROMPT), max_tokens=500)
    assert exc.value.policy == policy and exc.value.budget == "全局"
    assert len(gw.requests()) == 0  # refused before any request


async def test_an_alert_only_budget_never_refuses(gw):
    await run_db(BudgetFactory.create, limit=Decimal("0.01"), policy="alert")
    gw.rule({"content": "好的", "usage": USAGE})
    answers = [await complete(user_msg(PROMPT), max_tokens=500) for _ in range(3)]
    await aio.drain()
    assert [c.route for c in answers] == ["default"] * 3
    status = await run_db(check_budget)
    assert status.allowed and status.used_ratio == pytest.approx(6.0)


async def test_scoped_budgets_apply_only_to_their_target(gw, settings):
    settings.LLM_ROUTES = {**settings.LLM_ROUTES, "p2only": [{"provider": "p2", "model": "m2"}]}
    limit, block = Decimal("0.001"), "block"
    await run_db(BudgetFactory.create, name="p1 限额", scope="provider", target="p1", limit=limit, policy=block)
    await run_db(BudgetFactory.create, name="a9 限额", scope="agent", target="a9", limit=limit, policy=block)
    gw.rule({"content": "好的", "usage": USAGE})
    with pytest.raises(BudgetExceeded) as exc:
        await complete(user_msg(), max_tokens=500)  # p1's budget refuses → block
    assert exc.value.budget == "p1 限额"
    assert (await complete(user_msg(), route="p2only", user="a1", max_tokens=500)).model == "m2"
    with pytest.raises(BudgetExceeded) as exc:
        await complete(user_msg(), route="p2only", user="a9", max_tokens=500)
    assert exc.value.budget == "a9 限额"
    await aio.drain()


async def test_50_concurrent_calls_overshoot_by_at_most_one_call(gw, settings):
    settings.LLM_ROUTES = {"default": [{"provider": "p1", "model": "m1", "max_tokens": 500}]}
    await run_db(BudgetFactory.create, limit=Decimal("0.5"), policy="block")  # room for 25 calls
    gw.configure(latency=0.05)
    gw.rule({"content": "好的", "usage": USAGE})
    results = await asyncio.gather(*[complete(user_msg(PROMPT)) for _ in range(50)], return_exceptions=True)
    await aio.drain()
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(ok) + len(refused) == 50 and refused
    spent = sum(c.cost for c in ok)
    assert spent <= 0.5 + CALL_COST + 1e-9
    status = await run_db(check_budget)
    assert status.used == pytest.approx(spent)


async def test_raising_or_deleting_a_budget_applies_to_the_next_call(gw):
    budget = await run_db(BudgetFactory.create, limit=Decimal("0.001"), policy="block")
    with pytest.raises(BudgetExceeded):
        await complete(user_msg())
    budget.limit = Decimal("100")
    await run_db(costs.save_budget, budget)
    assert not (await complete(user_msg())).offline
    budget.limit = Decimal("0.001")
    await run_db(costs.save_budget, budget)
    await run_db(costs.delete_budgets, Budget.objects.filter(pk=budget.pk))
    assert not (await complete(user_msg())).offline
    await aio.drain()


def test_check_budget_answers_for_an_estimate_and_without_budgets(gw):
    assert check_budget().allowed and check_budget().policy == ""  # no budget: everything is allowed
    BudgetFactory(limit=Decimal("0.05"), policy="block")
    BudgetFactory(name="a1 限额", scope="agent", target="a1", limit=Decimal("0.01"), policy="handoff")
    aio.run(costs.track("p1", "m1", 1000, 500, "a1"))  # 0.02 CNY
    assert check_budget().allowed and check_budget().used_ratio == pytest.approx(0.4)
    assert not check_budget(estimate=0.04).allowed  # 0.02 spent + 0.04 > 0.05
    status = check_budget(provider="p1", model="m1", agent="a1")
    assert (status.allowed, status.budget, status.policy) == (False, "a1 限额", "handoff")
