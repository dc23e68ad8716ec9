"""The knowledge app's knobs: `settings.<NAME>` if the project defines it, else the environment, else
the default here (so the app works before wxcs/settings.py lists them)."""

import os

from django.conf import settings

DEFAULTS = {
    # How often a process compares its index with the Redis version key (ms); edits in this process
    # are seen at once, other processes' edits within this delay.
    "KNOWLEDGE_VERSION_CHECK_MS": 500.0,
    # Hybrid fusion: score = alpha * vector + (1 - alpha) * keyword.
    "KNOWLEDGE_HYBRID_ALPHA": 0.5,
    # Hits at or below this fused score are dropped.
    "KNOWLEDGE_MIN_SCORE": 0.05,
    # The offline answer (no LLM): the best hit's answer when its keyword score reaches this. On the FAQ
    # paraphrases 0.2 answers 92 % of the questions whose best hit is right and lets 4 % wrong ones through.
    "KNOWLEDGE_OFFLINE_MIN_SCORE": 0.2,
    # The gateway route that embeds, the per-query embedding timeout (s) and the batch size for entries.
    "KNOWLEDGE_EMBEDDING_ROUTE": "embedding",
    "KNOWLEDGE_EMBED_TIMEOUT": 2.0,
    "KNOWLEDGE_EMBED_BATCH": 64,
    # After a failed query embedding, skip the vector path for this many seconds (keyword only).
    "KNOWLEDGE_EMBED_BACKOFF": 5.0,
    # List questions answered by keyword because the embedding provider failed as gaps (admin).
    "KNOWLEDGE_RECORD_FALLBACK_GAPS": True,
    # Document import: default chunk size and overlap, in characters.
    "KNOWLEDGE_CHUNK_SIZE": 400,
    "KNOWLEDGE_CHUNK_OVERLAP": 80,
    # Celery workers build the index and load jieba's dictionary at start (background thread).
    "KNOWLEDGE_WARM_ON_START": True,
}


def get(name: str):
    default = DEFAULTS[name]
    if name == "KNOWLEDGE_VERSION_CHECK_MS" and getattr(settings, "TESTING", False):
        # Tests roll back or flush the database without signals and empty Redis between tests: look
        # at the version key on every query so no test sees another test's index.
        default = 0.0
    if hasattr(settings, name):
        return getattr(settings, name)
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return type(default)(raw)
