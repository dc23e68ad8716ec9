"""The Celery app: autodiscovers apps.*.tasks; queues, routes and every beat schedule live here.

django-celery-beat's DatabaseScheduler copies `beat_schedule` into PeriodicTask rows (by name) when beat
starts; admin can pause an entry there.
"""

import os
from datetime import timedelta

from celery import Celery
from django.conf import settings
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wxcs.settings")

app = Celery("wxcs")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each queue bound to its own exchange and key: sharing one would deliver a task to every queue.
QUEUES = {
    "default": "everything without a route",
    "messages": "process_message: latency-sensitive decisions",
    "sync": "ERP sync and other slow batch work",
}
app.conf.task_queues = tuple(Queue(name, Exchange(name), routing_key=name) for name in QUEUES)
app.conf.task_routes = {
    "apps.messages.tasks.process_message": {"queue": "messages"},
    "erp.sync_erp": {"queue": "sync"},
}


def beat_schedule() -> dict:
    schedule = {
        "成本：写入调用记录": {"task": "costs.flush_usage", "schedule": timedelta(seconds=5)},
        "消息：重新投递卡住的消息": {"task": "apps.messages.tasks.sweep_stuck", "schedule": timedelta(seconds=30)},
        "消息：重新推送未确认的回复": {
            "task": "apps.messages.tasks.redeliver_replies",
            "schedule": timedelta(seconds=settings.OUTBOX_SWEEP_INTERVAL),
            "options": {"expires": settings.OUTBOX_SWEEP_INTERVAL},  # a run nobody took in time: the next one will do
        },
        "监控：评估告警规则": {"task": "monitoring.evaluate_alerts", "schedule": timedelta(seconds=30)},
    }
    if settings.ERP_SYNC_INTERVAL_MINUTES > 0:
        schedule["ERP：同步客户"] = {
            "task": "erp.sync_erp",
            "schedule": timedelta(minutes=settings.ERP_SYNC_INTERVAL_MINUTES),
            "kwargs": {"trigger": "beat"},
        }
    return schedule


app.conf.beat_schedule = beat_schedule()
app.autodiscover_tasks(lambda: settings.INSTALLED_APPS)
