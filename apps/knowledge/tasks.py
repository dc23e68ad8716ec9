import logging

from celery import shared_task

from apps.core import aio
from apps.llm_gateway.types import EmbeddingUnavailable, NoEmbeddingModel

from . import services

logger = logging.getLogger(__name__)


@shared_task(
    name="knowledge.embed_entries",
    ignore_result=True,
    autoretry_for=(EmbeddingUnavailable,),
    retry_backoff=30,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=5,
)
def embed_entries_task(ids=None, all_entries=False):
    """Embed entries that have no vector (after an edit or an import); retried while the provider is down,
    not at all when no embedding model is configured (keyword retrieval serves meanwhile)."""
    try:
        return aio.run(services.embed_entries(ids, all_entries=all_entries))
    except NoEmbeddingModel as exc:
        logger.info("knowledge entries left without vectors: %s", exc)
        return 0
