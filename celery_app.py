"""The Celery app: autodiscovers apps.*.tasks; queues and the beat schedule live here."""

import os

from celery import Celery
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
    "apps.messages.tasks.process_messages": {"queue": "messages"},
    "erp.sync_erp": {"queue": "sync"},
}
app.autodiscover_tasks(lambda: __import__("django.conf").conf.settings.INSTALLED_APPS)
