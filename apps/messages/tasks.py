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
            countdown=busy_countdown(),
            max_retries=None,
            kwargs={"attempt": attempt, "conversation_id": conversation_id},
        ) from exc
    except Exception as exc:  # engine, database or Redis trouble: retry with backoff, then hand to a human
        countdown = retry_countdown(message_id, attempt, exc)
        if countdown is None:
            return "failed"
        raise self.retry(
            exc=exc,
            countdown=countdown,
            max_retries=None,
            kwargs={"attempt": attempt + 1, "conversation_id": conversation_id},
        ) from exc


def busy_countdown() -> float:
    return 0.05 + random.random() * 0.1


def retry_countdown(message_id: int, attempt: int, exc: Exception) -> float | None:
    """Backoff with jitter before retry `attempt + 1`; None once retries are exhausted (the message is then
    handed to a human)."""
    if attempt >= settings.PIPELINE_MAX_RETRIES:
        logger.error("message %s failed after %s retries: %s", message_id, attempt, exc)
        services.fail(message_id, f"{exc.__class__.__name__}: {exc}")
        return None
    countdown = min(60, 2**attempt) * (0.5 + random.random() / 2)
    logger.warning("message %s: transient error %r, retry %s in %.1fs", message_id, exc, attempt + 1, countdown)
    return countdown


@shared_task(
    name="apps.messages.tasks.process_messages",
    acks_late=True,
    reject_on_worker_lost=True,
)
def process_messages(pairs: list) -> dict:
    """A batch of [message id, conversation id] (an agent's frame), decided concurrently; a message that
    cannot be decided now continues alone as process_message, with the same retry rules."""
    outcomes = services.process_many([(int(mid), cid) for mid, cid in pairs])
    for (message_id, conversation_id), outcome in zip(pairs, outcomes, strict=True):
        if not isinstance(outcome, Exception):
            continue
        if isinstance(outcome, services.ConversationBusy):
            countdown, attempt = busy_countdown(), 0
        else:
            countdown, attempt = retry_countdown(message_id, 0, outcome), 1
            if countdown is None:
                continue
        process_message.apply_async(
            (message_id,), {"attempt": attempt, "conversation_id": conversation_id}, countdown=countdown
        )
    decided = sum(not isinstance(outcome, Exception) for outcome in outcomes)
    return {"decided": decided, "retried": len(outcomes) - decided}


@shared_task(name="apps.messages.tasks.sweep_stuck")
def sweep_stuck() -> int:
    return len(services.sweep_stuck())
