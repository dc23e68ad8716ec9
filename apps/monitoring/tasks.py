"""Celery tasks: alert evaluation (beat, every 30 s; schedule registered by migration 0002) and notifications."""

import random

from apps.monitoring import services
from apps.monitoring.notifiers import NotificationError
from celery_app import app


@app.task(name="monitoring.evaluate_alerts", ignore_result=True)
def evaluate_alerts() -> int:
    return len(services.evaluate_rules())


@app.task(bind=True, name="monitoring.notify_alert_event", ignore_result=True, max_retries=6)
def notify_alert_event(self, event_id: int, kind: str) -> None:
    try:
        services.notify_event(event_id, kind)
    except services.AlertEvent.DoesNotExist:
        return
    except NotificationError as exc:
        raise self.retry(exc=exc, countdown=min(300, 5 * 2**self.request.retries) + random.uniform(0, 3)) from exc
