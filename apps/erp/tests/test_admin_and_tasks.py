import time
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User

from apps.customers.models import Customer
from apps.erp import demo, platform
from apps.erp.models import ErpConnection, SyncRun


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
def test_demo_seed_leaves_a_configured_erp_to_the_periodic_sync(settings):
    settings.ERP_BASE_URL = "http://erp.example"
    demo.seed(StringIO())
    assert not SyncRun.objects.exists()
    settings.ERP_BASE_URL = ""
    ErpConnection.objects.create(base_url="http://erp.internal", username="u", password="p")
    demo.seed(StringIO())
    assert not SyncRun.objects.exists()


def test_make_run_starts_the_simulator_only_without_a_real_erp(settings):
    settings.ERP_BASE_URL, settings.ERP_SIMULATOR_PORT = "", 9123
    assert platform.processes()["erp-simulator"].endswith("-m apps.erp.simulator --port 9123")
    settings.ERP_BASE_URL = "http://erp.example"
    assert platform.processes() == {}


def test_beat_runs_the_sync_hourly_on_the_sync_queue():
    from apps.erp import tasks
    from celery_app import app

    entry = app.conf.beat_schedule["ERP：同步客户"]
    assert entry["task"] == tasks.TASK_NAME == tasks.sync_erp.name
    assert entry["schedule"] == timedelta(minutes=60)
    assert entry["options"] == {"queue": "sync"} and entry["kwargs"] == {"trigger": "beat"}


@pytest.mark.django_db
def test_admin_pages_render_with_search_filters_inlines_and_history(
    synced, admin_client, django_assert_max_num_queries
):
    with django_assert_max_num_queries(15):
        response = admin_client.get("/admin/customers/customer/")
    assert response.status_code == 200
    content = response.content.decode()
    assert "239" in content and "立即从 ERP 同步" in content and "同步记录" in content
    customer = Customer.objects.get(erp_id=3208)
    response = admin_client.get("/admin/customers/customer/", {"q": customer.contact_name})
    assert customer.name in response.content.decode()
    response = admin_client.get("/admin/customers/customer/", {"q": "K3208"})
    assert response.context["cl"].result_count == 1
    response = admin_client.get("/admin/customers/customer/", {"category__exact": "经销商"})
    assert response.context["cl"].result_count == 2
    salesperson = customer.salesperson
    response = admin_client.get("/admin/customers/customer/", {"salesperson__exact": salesperson})
    assert response.context["cl"].result_count == Customer.objects.filter(salesperson=salesperson).count()
    response = admin_client.get(f"/admin/customers/customer/{customer.pk}/change/")
    content = response.content.decode()
    assert response.status_code == 200 and "联系人" in content and "合同" in content and "微信绑定" in content
    for contact in customer.contacts.all():
        assert contact.name in content
    response = admin_client.get("/admin/erp/syncrun/")
    assert response.status_code == 200 and "成功" in response.content.decode()
    assert admin_client.get(f"/admin/erp/syncrun/{synced.pk}/change/").status_code == 200
    assert admin_client.get("/admin/erp/contract/").status_code == 200
    assert admin_client.get("/admin/customers/wechatbinding/").status_code == 200


@pytest.mark.django_db
def test_erp_connection_admin_keeps_the_password_encrypted_and_hidden(admin_client):
    response = admin_client.post(
        "/admin/erp/erpconnection/add/",
        {"name": "生产 ERP", "base_url": "http://erp.internal:8080", "username": "api", "password": "Top$ecret1",
         "active": "on"},
    )  # fmt: skip
    assert response.status_code == 302
    connection = ErpConnection.objects.get()
    assert connection.password == "Top$ecret1"
    page = admin_client.get(f"/admin/erp/erpconnection/{connection.pk}/change/").content.decode()
    assert "Top$ecret1" not in page
    admin_client.post(
        f"/admin/erp/erpconnection/{connection.pk}/change/",
        {
            "name": "生产 ERP",
            "base_url": "http://erp.internal:8080",
            "username": "api2",
            "password": "",
            "active": "on",
        },
    )
    connection.refresh_from_db()
    assert (connection.username, connection.password) == ("api2", "Top$ecret1")


@pytest.mark.e2e
def test_admin_button_runs_the_sync_in_a_real_celery_worker(live_env, simulator, tmp_path):
    from django.test import Client

    from apps.core.testing import running, start_worker

    live_env.update(ERP_BASE_URL=simulator.url, ERP_USERNAME="demo", ERP_PASSWORD="demo-erp", ERP_RETRY_BACKOFF="0.01")
    worker = start_worker(live_env, tmp_path, queues="sync", concurrency=1)
    with running(worker):
        client = Client()
        client.force_login(User.objects.create_superuser("boss", password="pw"))
        response = client.post("/admin/erp/syncrun/sync-now/", {"full": "1"}, follow=True)
        assert "已开始从 ERP 同步" in response.content.decode()
        deadline = time.monotonic() + 60
        while not SyncRun.objects.filter(status="success").exists():
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.2)
    run = SyncRun.objects.get()
    assert (run.trigger, run.full, run.created >= 239) == ("admin", True, True)
    assert Customer.objects.count() == 239


@pytest.mark.django_db
def test_sync_task_returns_the_run_skips_when_locked_and_retries_an_unreachable_erp(simulator):
    from celery.exceptions import MaxRetriesExceededError
    from django.core.cache import cache

    from apps.erp import services, tasks

    run_id = tasks.sync_erp.apply(kwargs={"trigger": "beat"}).get()
    assert SyncRun.objects.get(pk=run_id).trigger == "beat"
    cache.add(services.LOCK_KEY, "busy", timeout=60)
    assert tasks.sync_erp.apply().get() is None
    cache.delete(services.LOCK_KEY)
    simulator.fault("custom/list.asp", 500, times=1000)
    with pytest.raises(MaxRetriesExceededError):
        tasks.sync_erp.apply(kwargs={"trigger": "beat"}).get()
    assert SyncRun.objects.filter(status="failed").count() == 1 + tasks.sync_erp.max_retries
