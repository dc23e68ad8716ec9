"""Thin Celery tasks: load, call a service."""

import logging
import random

from celery import shared_task
from django.conf import settings

from apps.messages import services

logger = logging.getLogger("wxcs.pipeline")


@shared_task(
    bind=True,
    name="apps.messages.tasks.process_message",
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
)
def process_message(self, message_id: int, attempt: int = 0, conversation_id: int | None = None) -> str:
    try:
        return services.process(message_id, conversation_id)
    except services.ConversationBusy as exc:
        # an older message of the same chat is being decided: come back shortly (arrival order)
        raise self.retry(
            exc=exc,
            countdown=0.05 + random.random() * 0.1,
            max_retries=None,
            kwargs={"attempt": attempt, "conversation_id": conversation_id},
        ) from exc
    except Exception as exc:  # engine, database or Redis trouble: retry with backoff, then hand to a human
        if attempt >= settings.PIPELINE_MAX_RETRIES:
            logger.error("message %s failed after %s retries: %s", message_id, attempt, exc)
            services.fail(message_id, f"{exc.__class__.__name__}: {exc}")
            return "failed"
        countdown = min(60, 2**attempt) * (0.5 + random.random() / 2)
        logger.warning("message %s: transient error %r, retry %s in %.1fs", message_id, exc, attempt + 1, countdown)
        raise self.retry(
            exc=exc,
            countdown=countdown,
            max_retries=None,
            kwargs={"attempt": attempt + 1, "conversation_id": conversation_id},
        ) from exc


@shared_task(name="apps.messages.tasks.sweep_stuck")
def sweep_stuck() -> int:
    return len(services.sweep_stuck())
