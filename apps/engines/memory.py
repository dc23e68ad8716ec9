"""Conversation memory: recent turns within a window, the rolling summary, long-term facts per contact.

Retrieval is cached (django-redis, key = conversation + its memory version + query + limit, TTL
settings.REDIS_TTL). `invalidate_memory(conversation_id)` bumps the conversation's version, so every
cached retrieval of it is left behind at once (no key scan); the pipeline calls it when a message
arrives and the engines call it after answering. When Redis does not answer, an in-process cache takes
over (and Redis is not retried for a few seconds), so the reply still goes out.
"""

import hashlib
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.cache.backends.locmem import LocMemCache
from django.utils import timezone

from apps.engines import adapters, metrics
from apps.engines.dbsync import db
from apps.engines.models import ContactFact, ConversationSummary

logger = logging.getLogger(__name__)

REDIS_RETRY_SECONDS = 5.0


@dataclass
class MemorySnapshot:
    turns: list[dict] = field(default_factory=list)  # {"role", "content", "name"?}, oldest first
    summary: str = ""
    facts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class MemoryCache:
    """Redis first; an in-process cache while Redis is down. Reports which one answered."""

    def __init__(self):
        self.local = LocMemCache("engines-memory", {"TIMEOUT": settings.REDIS_TTL, "OPTIONS": {"MAX_ENTRIES": 5000}})
        self._redis_down_until = 0.0
        self._lock = threading.Lock()

    def _redis_usable(self) -> bool:
        return time.monotonic() >= self._redis_down_until

    def _redis_failed(self, exc: Exception) -> None:
        with self._lock:
            if self._redis_usable():
                logger.warning("memory cache: Redis unavailable (%s); in-process cache", exc.__class__.__name__)
            self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS

    def get(self, key: str):
        if self._redis_usable():
            try:
                return cache.get(key)
            except Exception as exc:
                self._redis_failed(exc)
        return self.local.get(key)

    def set(self, key: str, value, timeout: int | None = None) -> None:
        timeout = settings.REDIS_TTL if timeout is None else timeout
        self.local.set(key, value, timeout)
        if self._redis_usable():
            try:
                cache.set(key, value, timeout)
            except Exception as exc:
                self._redis_failed(exc)

    def incr_version(self, key: str) -> None:
        self.local.set(key, time.time_ns(), None)
        if self._redis_usable():
            try:
                cache.set(key, time.time_ns(), None)
            except Exception as exc:
                self._redis_failed(exc)

    def reset_local(self) -> None:
        self.local.clear()
        self._redis_down_until = 0.0


memory_cache = MemoryCache()


def _version_key(conversation_id: int) -> str:
    return f"engines:memory-version:{conversation_id}"


def invalidate_memory(conversation_id: int) -> None:
    """Forget every cached memory retrieval of this conversation (call when a message arrives)."""
    memory_cache.incr_version(_version_key(conversation_id))


def cache_key(conversation_id: int, kind: str, lookup: str, limit: int) -> str:
    """Key of one cached retrieval: conversation, its memory version, what was looked up, limit."""
    version = memory_cache.get(_version_key(conversation_id)) or 0
    digest = hashlib.sha1(lookup.encode(), usedforsecurity=False).hexdigest()
    return f"engines:{kind}:{conversation_id}:{version}:{limit}:{digest}"


def _bigrams(text: str) -> set[str]:
    text = "".join(text.split())
    return {text[i : i + 2] for i in range(len(text) - 1)} or {text}


def rank_facts(facts: list[str], query: str, limit: int) -> list[str]:
    """Facts sharing the most character bigrams with the query first; ties keep recency order."""
    query_grams = _bigrams(query)
    ranked = sorted(enumerate(facts), key=lambda item: (-len(_bigrams(item[1]) & query_grams), item[0]))
    return [fact for _, fact in ranked[:limit]]


def load_memory(conversation_id: int, contact: str, query: str, limit: int) -> MemorySnapshot:
    """The memory straight from the database (no cache). Sync."""
    since = timezone.now() - timedelta(minutes=settings.ENGINE_MEMORY_WINDOW_MINUTES)
    turns = adapters.recent_turns(conversation_id, since, limit + 1)
    # The pipeline stores the message being answered before asking the engine: it is the new
    # message, not memory.
    if turns and turns[-1]["role"] == "user" and turns[-1]["content"] == query:
        turns = turns[:-1]
    turns = [
        {key: value for key, value in turn.items() if key in ("role", "content", "name") and value}
        for turn in turns[-limit:]
    ]
    summary = ConversationSummary.objects.filter(conversation_id=conversation_id).values_list("summary", flat=True)
    facts: list[str] = []
    conversation = adapters.conversation(conversation_id)
    if conversation is not None and contact:
        facts = list(
            ContactFact.objects.filter(
                agent_id=conversation.agent_id, chat_name=conversation.chat_name, contact=contact
            ).values_list("fact", flat=True)[:200]
        )
    return MemorySnapshot(
        turns=turns,
        summary=summary.first() or "",
        facts=rank_facts(facts, query, settings.ENGINE_MEMORY_MAX_FACTS),
    )


async def retrieve_memory(
    conversation_id: int, contact: str, query: str, limit: int | None = None
) -> tuple[MemorySnapshot, bool]:
    """(memory, cache_hit) for this conversation/contact and the new message `query`."""
    limit = limit or settings.ENGINE_MEMORY_MAX_TURNS
    key = cache_key(conversation_id, "memory", f"{contact}\x00{query}", limit)
    cached = memory_cache.get(key)
    if cached is not None:
        metrics.CACHE.labels("memory", "hit").inc()
        return MemorySnapshot(**cached), True
    metrics.CACHE.labels("memory", "miss").inc()
    snapshot = await db(load_memory, conversation_id, contact, query, limit)
    memory_cache.set(key, snapshot.as_dict())
    return snapshot, False


def remember_fact(conversation_id: int, contact: str, fact: str, source: str = ContactFact.Source.MODEL) -> bool:
    """Keep a long-term fact about the conversation's contact; False if there is no such conversation."""
    conversation = adapters.conversation(conversation_id)
    fact = " ".join(fact.split())[:500]
    if conversation is None or not contact or not fact:
        return False
    ContactFact.objects.get_or_create(
        agent_id=conversation.agent_id,
        chat_name=conversation.chat_name,
        contact=contact,
        fact=fact,
        defaults={"source": source, "conversation_id": conversation_id},
    )
    invalidate_memory(conversation_id)
    return True
