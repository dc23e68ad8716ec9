"""ERP sync task (queue `sync`); its beat entry (every ERP_SYNC_INTERVAL_MINUTES, 0 = off) is declared
in celery_app.py."""

import random

from celery import shared_task

from apps.core import jobs
from apps.erp import services
from apps.erp.models import SyncRun

TASK_NAME = "erp.sync_erp"


def enqueue_sync(*, full: bool = False, trigger: str = SyncRun.Trigger.ADMIN) -> None:
    jobs.enqueue(TASK_NAME, full=full, trigger=trigger)


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
