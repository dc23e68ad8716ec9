"""Thin Celery tasks: the pipeline's retries and the sweep. (First attempts come from the decision queue,
apps.messages.queue, not from a task per message.)"""

import logging
import random

from celery import shared_task
from django.conf import settings

from apps.core import aio
from apps.messages import outbox, pipeline

logger = logging.getLogger("wxcs.pipeline")


@shared_task(bind=True, name=pipeline.RETRY_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def process_message(self, message_id: int, conversation_id: int, attempt: int = 0) -> str:
    """Decide a message again after a transient error; retries with backoff, then hands it to a human. Any
    other error fails it at once, visibly."""
    kwargs = {"conversation_id": conversation_id, "attempt": attempt}
    try:
        return aio.run(pipeline.process(message_id, conversation_id))
    except pipeline.TRANSIENT_ERRORS as exc:
        if attempt >= settings.PIPELINE_MAX_RETRIES:
            pipeline.fail(message_id, f"{exc.__class__.__name__} after {attempt} retries: {exc}")
            return "failed"
        countdown = min(60, 2**attempt) * (0.5 + random.random() / 2)
        logger.warning("message %s: %r, retry %s in %.1fs", message_id, exc, attempt + 1, countdown)
        raise self.retry(exc=exc, countdown=countdown, kwargs={**kwargs, "attempt": attempt + 1}) from exc
    except Exception as exc:
        logger.exception("message %s could not be decided", message_id)
        pipeline.fail(message_id, f"{exc.__class__.__name__}: {exc}")
        return "failed"


@shared_task(name="apps.messages.tasks.sweep_stuck")
def sweep_stuck() -> int:
    return len(pipeline.sweep_stuck())


@shared_task(name="apps.messages.tasks.redeliver_replies", ignore_result=True)
def redeliver_replies() -> int:
    """Beat's outbox sweep: unacked replies of connected agents pushed again (apps.messages.outbox)."""
    return aio.run(outbox.redeliver_stale(), timeout=60)
