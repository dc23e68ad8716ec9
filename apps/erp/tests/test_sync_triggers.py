"""What starts a sync besides the command: beat (hourly, queue `sync`), the admin button (a real worker),
and the task's behaviour when a sync is already running or the ERP is unreachable."""

import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.cache import cache

from apps.customers.models import Customer
from apps.erp import services, tasks
from apps.erp.models import SyncRun


def test_beat_runs_the_sync_hourly_on_the_sync_queue():
    from celery_app import app

    entry = app.conf.beat_schedule["ERP：同步客户"]
    assert entry["task"] == tasks.TASK_NAME == tasks.sync_erp.name
    assert entry["schedule"] == timedelta(minutes=60)
    assert entry["kwargs"] == {"trigger": "beat"}
    assert app.amqp.router.route({}, entry["task"])["queue"].name == "sync"  # task_routes, for beat's send_task too


@pytest.mark.django_db
def test_sync_task_returns_the_run_skips_when_locked_and_retries_an_unreachable_erp(simulator):
    from celery.exceptions import MaxRetriesExceededError

    run_id = tasks.sync_erp.apply(kwargs={"trigger": "beat"}).get()
    assert SyncRun.objects.get(pk=run_id).trigger == "beat"
    cache.add(services.LOCK_KEY, "busy", timeout=60)
    assert tasks.sync_erp.apply().get() is None
    cache.delete(services.LOCK_KEY)
    simulator.fault("custom/list.asp", 500, times=1000)
    with pytest.raises(MaxRetriesExceededError):
        tasks.sync_erp.apply(kwargs={"trigger": "beat"}).get()
    assert SyncRun.objects.filter(status="failed").count() == 1 + tasks.sync_erp.max_retries


@pytest.mark.django_db
def test_the_sync_button_while_a_sync_runs_or_without_permission_starts_nothing(
    admin_client, client, django_capture_on_commit_callbacks
):
    cache.add(services.LOCK_KEY, "busy", timeout=60)
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post("/admin/erp/syncrun/sync-now/", follow=True)
    assert "正在进行中" in response.content.decode() and callbacks == []
    cache.delete(services.LOCK_KEY)
    client.force_login(User.objects.create_user("clerk", password="pw", is_staff=True))
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post("/admin/erp/syncrun/sync-now/")
    assert [str(message) for message in get_messages(response.wsgi_request)] == ["没有权限"] and callbacks == []
    assert admin_client.get("/admin/erp/syncrun/sync-now/").status_code == 405  # POST only


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
