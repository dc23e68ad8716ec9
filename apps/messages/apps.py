from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MessagesConfig(AppConfig):
    name = "apps.messages"
    label = "wxmessages"
    verbose_name = _("消息")

    def ready(self):
        from celery.signals import worker_ready, worker_shutdown

        from apps.messages import history

        history.register()  # the engines read conversations through it (apps.engines.history)
        worker_ready.connect(start_decision_queue, weak=False, dispatch_uid="wxmessages.decision-queue.start")
        worker_shutdown.connect(stop_decision_queue, weak=False, dispatch_uid="wxmessages.decision-queue.stop")


def start_decision_queue(sender=None, **kwargs) -> None:
    """A Celery worker that serves the `messages` queue decides messages from the decision queue."""
    from apps.messages import pipeline, queue

    if sender is not None and "messages" in sender.app.amqp.queues.consume_from:
        queue.start(pipeline.handle)


def stop_decision_queue(sender=None, **kwargs) -> None:
    from apps.messages import queue

    queue.stop()
