from celery import shared_task

from . import services


@shared_task(
    name="knowledge.embed_entries",
    ignore_result=True,
    autoretry_for=(Exception,),
    retry_backoff=30,
    retry_backoff_max=600,
    max_retries=5,
)
def embed_entries_task(ids=None, all_entries=False):
    """Embed entries that have no vector (after an edit or an import); retried while the provider is down."""
    return services.embed_entries(ids, all_entries=all_entries)
