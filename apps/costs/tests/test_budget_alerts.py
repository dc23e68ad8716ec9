"""Budget alerts: one per budget, period and threshold; recorded, logged and handed to monitoring by task
name ("monitoring.notify"), never by importing it."""

from decimal import Decimal

import pytest

from apps.costs import services as costs
from apps.costs.config import enabled_budgets
from apps.costs.models import BudgetAlert
from apps.costs.tests.factories import BudgetFactory


@pytest.fixture
def sent(monkeypatch):
    """The tasks costs enqueued: [(task name, args, kwargs)]."""
    calls = []
    monkeypatch.setattr(costs.jobs, "enqueue", lambda name, *args, **kwargs: calls.append((name, args, kwargs)))
    return calls


def conf(budget):
    """The budget as the tracker sees it."""
    return next(b for b in enabled_budgets() if b.id == budget.id)


def test_crossing_thresholds_records_and_notifies_each_once(db, sent):
    budget = conf(BudgetFactory(name="日预算", limit=Decimal("1"), thresholds=[50, 100]))
    created = costs.record_alerts([(budget, "20260101", 50, 0.5), (budget, "20260101", 100, 1.0)])
    assert [a.threshold for a in created] == [50, 100]
    assert [(name, kwargs["severity"]) for name, _args, kwargs in sent] == [
        ("monitoring.notify", "warning"),
        ("monitoring.notify", "critical"),
    ]
    title, body = sent[1][1]
    assert title == "预算告警 100%" and "日预算" in body and "1.0000 / 1.00 元" in body
    # the same crossing again (Redis lost its once-per-period flags): nothing new, nobody paged twice
    assert costs.record_alerts([(budget, "20260101", 100, 1.2)]) == []
    assert BudgetAlert.objects.count() == 2 and len(sent) == 2
    # a new period alerts again
    assert len(costs.record_alerts([(budget, "20260102", 50, 0.6)])) == 1


def test_a_broker_outage_does_not_lose_the_alert(db, monkeypatch):
    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(costs.jobs, "enqueue", broker_down)
    budget = conf(BudgetFactory(limit=Decimal("1")))
    created = costs.record_alerts([(budget, "20260101", 80, 0.8)])
    assert len(created) == 1 and BudgetAlert.objects.get().threshold == 80
