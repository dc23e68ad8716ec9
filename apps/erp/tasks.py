"""ERP sync task (queue `sync`) and its beat entry.

The periodic schedule is declared here in `beat_schedule` (every ERP_SYNC_INTERVAL_MINUTES, 0 = off);
django-celery-beat's DatabaseScheduler copies it into a PeriodicTask row when beat starts, where
admin can pause it.
"""

import random
from datetime import timedelta

from celery import shared_task
from django.conf import settings

from apps.erp import services
from apps.erp.models import SyncRun
from celery_app import app

TASK_NAME = "erp.sync_erp"

if settings.ERP_SYNC_INTERVAL_MINUTES > 0:
    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        "ERP：同步客户": {
            "task": TASK_NAME,
            "schedule": timedelta(minutes=settings.ERP_SYNC_INTERVAL_MINUTES),
            "kwargs": {"trigger": SyncRun.Trigger.BEAT},
            "options": {"queue": "sync"},
        },
    }


def enqueue_sync(*, full: bool = False, trigger: str = SyncRun.Trigger.ADMIN) -> None:
    sync_erp.apply_async(kwargs={"full": full, "trigger": trigger}, queue="sync")


@shared_task(bind=True, name=TASK_NAME, ignore_result=True, max_retries=3)
def sync_erp(self, full: bool = False, trigger: str = SyncRun.Trigger.BEAT) -> int | None:
    """Run one sync; a sync already running makes this a no-op. Returns the SyncRun id."""
    try:
        run = services.sync_erp(full=full, trigger=trigger)
    except services.SyncAlreadyRunning:
        return None
    if run.status == SyncRun.Status.FAILED and run.stats.get("transient"):
        # The ERP was unreachable (network / 5xx after the client's own retries): try again later.
        countdown = min(900, 60 * 2**self.request.retries) + random.uniform(0, 30)
        raise self.retry(countdown=countdown)
    return run.pk
