"""The daily cost report: from the Redis counters, or from the usage records once Redis no longer has the
day; the `cost_report` command and the admin page."""

import json
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.core import aio, redis
from apps.costs import services as costs
from apps.costs import store
from apps.costs.selectors import GROUPS, daily_report
from apps.costs.tests.factories import BudgetFactory, UsageRecordFactory
from apps.llm_gateway.services import complete
from apps.llm_gateway.tests.conftest import user_msg

USAGE = {"input_tokens": 1000, "output_tokens": 500}


def _calls() -> None:
    aio.run(costs.track("p1", "m1", 1000, 500, {"agent": "a1", "customer": "c1"}, route="default"))
    aio.run(costs.track("p1", "m1", 1000, 500, {"agent": "a1", "customer": "c2"}, route="default"))
    aio.run(costs.track("p2", "m2", 1000, 500, "a2", route="cheap"))  # 0.04 CNY, as much as the two above


def test_the_database_view_of_a_day_agrees_with_the_redis_one(gw):
    _calls()
    costs.flush_usage()
    live = daily_report()
    assert (live["source"], live["calls"], live["total_cost"]) == ("redis", 3, pytest.approx(0.08))
    assert live["avg_cost"] == pytest.approx(0.08 / 3, abs=1e-6)
    assert [(row["name"], row["calls"]) for row in live["by_model"]] == [
        ("p1/m1", 2),
        ("p2/m2", 1),
    ]  # 0.04 each: by name
    redis.client().delete(store.day_key(timezone.localdate().strftime("%Y%m%d")))
    stored = daily_report()
    assert stored["source"] == "database"
    for field in ("calls", "total_cost", "input_tokens", "output_tokens", *(f"by_{group}" for group in GROUPS)):
        assert stored[field] == live[field], field


def test_a_day_without_calls_is_all_zero(db):
    report = daily_report(date(2020, 1, 1))
    assert (report["source"], report["calls"], report["total_cost"], report["avg_cost"]) == ("database", 0, 0, 0)
    assert report["by_provider"] == [] and report["budgets"] == []


def test_a_past_day_comes_from_its_usage_records(db):
    yesterday = timezone.now() - timedelta(days=1)
    UsageRecordFactory.create_batch(2, created_at=yesterday, agent="a1")
    UsageRecordFactory(created_at=yesterday, price_known=False, cost=Decimal("0.15"), model="mystery")
    report = daily_report(timezone.localdate(yesterday))
    assert (report["calls"], report["total_cost"]) == (3, pytest.approx(0.19))
    assert (report["unpriced_calls"], report["unpriced_cost"]) == (1, pytest.approx(0.15))
    assert report["by_agent"] == [
        {"name": "a1", "cost": 0.04, "calls": 2, "avg_cost": 0.02, "input_tokens": 2000, "output_tokens": 1000}
    ]


def test_today_shows_each_budget_used(gw):
    BudgetFactory(limit=Decimal("0.1"))
    aio.run(costs.track("p1", "m1", 1000, 500))
    (budget,) = daily_report()["budgets"]
    assert (budget["name"], budget["used"], budget["used_pct"], budget["policy"]) == ("全局", 0.02, 20.0, "cheap")


def test_cost_report_command_and_admin_page(gw, admin_client, capsys):
    gw.rule({"content": "好的", "usage": USAGE})
    aio.run(complete(user_msg(), user={"agent": "a1"}))
    aio.run(aio.drain())
    call_command("cost_report")
    out = capsys.readouterr().out
    assert "调用 1 次" in out and "p1/m1" in out
    call_command("cost_report", "--json", "--date", "2020-01-01")
    assert json.loads(capsys.readouterr().out)["calls"] == 0
    with pytest.raises(CommandError):
        call_command("cost_report", "--date", "yesterday")
    page = admin_client.get("/admin/costs/usagerecord/report/")
    assert page.status_code == 200 and "p1/m1" in page.content.decode()
    page = admin_client.get("/admin/costs/usagerecord/report/?date=not-a-date")  # falls back to today
    assert page.status_code == 200 and "p1/m1" in page.content.decode()
