"""`make run` on the embedded default: the bundled ERP simulator and the 239 demo customers."""

from io import StringIO

import pytest

from apps.customers import selectors
from apps.customers.models import BindingChange, Customer
from apps.erp import demo, platform
from apps.erp.models import SyncRun
from apps.erp.tests.factories import ErpConnectionFactory


@pytest.mark.django_db
def test_demo_seed_syncs_239_customers_from_a_simulator_over_http_and_is_idempotent(settings):
    settings.ERP_BASE_URL = ""
    out = StringIO()
    demo.seed(out)
    assert Customer.objects.count() == 239
    assert "239 customers created" in out.getvalue()
    demo.seed(out)
    assert "0 customers created, 0 updated, 239 unchanged" in out.getvalue()
    assert list(SyncRun.objects.values_list("trigger", "status")) == [("demo", "success")] * 2


@pytest.mark.django_db
def test_demo_seed_binds_the_demo_chat_through_a_staff_remark(settings):
    """The demo shows a bound customer from a trusted source (the remark staff write), recorded once."""
    settings.ERP_BASE_URL = ""
    demo.seed(StringIO())
    demo.seed(StringIO())
    customer = selectors.trusted_customer("agt_demo", "王五", "王五")
    assert customer == Customer.objects.get(erp_id=3001)
    change = BindingChange.objects.get(action="remark")
    assert (change.actor_name, change.source, change.to_status) == ("system:seed_demo", "remark", "bound")


@pytest.mark.django_db
def test_demo_seed_leaves_a_configured_erp_to_the_periodic_sync(settings):
    settings.ERP_BASE_URL = "http://erp.example"
    demo.seed(StringIO())
    assert not SyncRun.objects.exists()
    settings.ERP_BASE_URL = ""
    ErpConnectionFactory()
    demo.seed(StringIO())
    assert not SyncRun.objects.exists()


def test_make_run_starts_the_simulator_only_without_a_real_erp(settings):
    settings.ERP_BASE_URL, settings.ERP_SIMULATOR_PORT = "", 9123
    assert platform.processes()["erp-simulator"].endswith("-m apps.erp.simulator --port 9123")
    settings.ERP_BASE_URL = "http://erp.example"
    assert platform.processes() == {}
