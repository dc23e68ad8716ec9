"""The one way work is handed to a Celery worker: `enqueue(task name, …)`, after the transaction commits.

By name, so an app can start a task of an app above it without importing it (costs raises an alert that
monitoring sends); queues come from `celery_app.task_routes`. Outside a transaction it is sent at once
(sync code; async code calls it through `apps.core.db.run_db`: publishing is blocking I/O).
"""

from django.db import connection, transaction


def enqueue(task_name: str, *args, countdown: float | None = None, **kwargs) -> None:
    def send() -> None:
        from celery_app import app

        app.send_task(task_name, args, kwargs, countdown=countdown)

    if connection.in_atomic_block:
        transaction.on_commit(send)
    else:
        send()
