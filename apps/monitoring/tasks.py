"""Celery tasks: alert evaluation (beat, every 30 s, declared in celery_app.py) and notifications.

`monitoring.notify` is how apps below monitoring raise a notification (costs' budget alerts):
`apps.core.jobs.enqueue("monitoring.notify", title, body, severity)`, by name, never by import.
"""

import random

from apps.monitoring import services
from apps.monitoring.notifiers import NotificationError
from celery_app import app


@app.task(name="monitoring.evaluate_alerts", ignore_result=True)
def evaluate_alerts() -> int:
    return len(services.evaluate_rules())


@app.task(name="monitoring.notify", ignore_result=True)
def notify(title: str, body: str, severity: str = "warning") -> None:
    """Send through every enabled channel. Not retried: a failing channel is logged, and a retry would
    repeat the message on the channels that did get it."""
    services.notify(title, body, severity)


@app.task(bind=True, name=services.NOTIFY_EVENT_TASK, ignore_result=True, max_retries=6)
def notify_alert_event(self, event_id: int, kind: str) -> None:
    try:
        services.notify_event(event_id, kind)
    except services.AlertEvent.DoesNotExist:
        return
    except NotificationError as exc:
        raise self.retry(exc=exc, countdown=min(300, 5 * 2**self.request.retries) + random.uniform(0, 3)) from exc
