from celery import shared_task

from apps.costs import services


@shared_task(name="costs.flush_usage", ignore_result=True)
def flush_usage() -> int:
    """Write queued usage records to the database (beat: every few seconds)."""
    return services.flush_usage()
