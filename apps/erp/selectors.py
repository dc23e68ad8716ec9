"""Reads of the erp app for other apps (monitoring)."""

from datetime import datetime

from apps.erp.models import SyncRun


def failed_syncs_since(since: datetime) -> int:
    """ERP sync runs started since `since` that failed outright."""
    return SyncRun.objects.filter(status=SyncRun.Status.FAILED, started_at__gte=since).count()
