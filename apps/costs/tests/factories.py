"""Costs test data: prices and budgets saved through the costs services (so the gateway sees them, as after
an admin save); usage records as the flush writes them."""

from datetime import date
from decimal import Decimal

import factory
from django.utils import timezone

from apps.costs import services
from apps.costs.models import Budget, ModelPrice, UsageRecord


class ModelPriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelPrice

    provider = "p1"
    model = factory.Sequence(lambda n: f"m{n}")
    input_per_1k = Decimal("0.01")
    output_per_1k = Decimal("0.02")
    effective_date = date(2024, 1, 1)

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return services.save_price(model_class(*args, **kwargs))


class BudgetFactory(factory.django.DjangoModelFactory):
    """A global daily budget of 0.1 CNY, alerting at 80 % and 100 %, degrading to the cheap route."""

    class Meta:
        model = Budget

    name = "全局"
    scope = "global"
    target = ""
    period = "day"
    limit = Decimal("0.1")
    thresholds = factory.LazyFunction(lambda: [80, 100])
    policy = "cheap"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return services.save_budget(model_class(*args, **kwargs))


class UsageRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageRecord

    call_id = factory.Sequence(lambda n: f"call-{n}")
    created_at = factory.LazyFunction(timezone.now)
    day = factory.LazyAttribute(lambda record: timezone.localdate(record.created_at))
    provider = "p1"
    model = "m1"
    input_tokens = 1000
    output_tokens = 500
    cost = Decimal("0.02")
