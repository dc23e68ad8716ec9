"""ERP test data: connection settings, contracts and sync runs (customers: apps.customers.tests.factories)."""

import factory

from apps.customers.tests.factories import CustomerFactory
from apps.erp.models import Contract, ErpConnection, SyncRun


class ErpConnectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ErpConnection

    base_url = "http://erp.internal"
    username = "api"
    password = "pa55"


class ContractFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contract

    erp_id = factory.Sequence(lambda n: 800_000 + n)
    customer = factory.SubFactory(CustomerFactory)
    number = factory.Sequence(lambda n: f"HT-{n:05d}")
    title = "7kW 交流充电桩采购"
    amount = "12800.00"


class SyncRunFactory(factory.django.DjangoModelFactory):
    """A finished sync run (`started_at` is set on insert; pass `started_at` to backdate it)."""

    class Meta:
        model = SyncRun

    status = SyncRun.Status.SUCCESS
    trigger = SyncRun.Trigger.BEAT

    @classmethod
    def _create(cls, model_class, *args, started_at=None, **kwargs):
        run = super()._create(model_class, *args, **kwargs)
        if started_at is not None:  # auto_now_add ignores a given value
            model_class.objects.filter(pk=run.pk).update(started_at=started_at)
            run.started_at = started_at
        return run
