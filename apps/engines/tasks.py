"""Engine tasks: thin wrappers over apps.engines services."""

import logging
import os
import time

from celery import shared_task
from django.core.cache import cache

from apps.core import aio
from apps.engines import manager, memory

logger = logging.getLogger(__name__)


@shared_task(name="engines.refresh_summary", ignore_result=True, acks_late=True)
def refresh_summary(conversation_id: int) -> bool:
    """Idempotent: turns already folded into the summary are skipped (covered_until)."""
    return aio.run(memory.refresh_summary(conversation_id), timeout=120)


@shared_task(name="engines.report_engine", ignore_result=True)
def report_engine(report_key: str, conversation_id: int, personality_id: int | None = None, override: str = "") -> str:
    """Which engine this worker process resolves for the conversation, written to the cache under
    `report_key` (there is no result backend): lets admin/ops check a switch reached the workers."""
    engine = aio.run(manager.resolve_engine(conversation_id, personality_id, override), timeout=10)
    cache.set(report_key, {"engine": engine.name, "pid": os.getpid(), "at": time.time()}, timeout=300)
    return engine.name
