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

from apps.core.db import run_db
from apps.engines import adapters, metrics
from apps.engines.models import ContactFact, ConversationSummary
from apps.llm_gateway import services as gateway

logger = logging.getLogger(__name__)

REDIS_RETRY_SECONDS = 5.0


@dataclass
class MemorySnapshot:
    turns: list[dict] = field(default_factory=list)  # {"role", "content", "name"?}, oldest first
    summary: str = ""
    facts: list[str] = field(default_factory=list)
    summary_due: bool = False  # turns fell out of the window since the summary was last written

    def as_dict(self) -> dict:
        return asdict(self)


_MISSING = object()


class RedisGuard:
    """Runs cache operations on Redis unless it failed in the last REDIS_RETRY_SECONDS, so a Redis
    outage costs one failed call per process every few seconds, not one per message."""

    def __init__(self):
        self._down_until = 0.0
        self._lock = threading.Lock()

    def usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def call(self, operation, *args, default=_MISSING):
        """operation(*args), or `default` (_MISSING when not given) when Redis is down or fails."""
        if not self.usable():
            return default
        try:
            return operation(*args)
        except Exception as exc:
            with self._lock:
                if self.usable():
                    logger.warning("Redis unavailable (%s); engines use in-process state", exc.__class__.__name__)
                self._down_until = time.monotonic() + REDIS_RETRY_SECONDS
            return default

    def reset(self) -> None:
        self._down_until = 0.0


redis_guard = RedisGuard()


class MemoryCache:
    """Redis first; an in-process cache while Redis is down. Invalidations made during an outage are
    replayed to Redis when it answers again, so its older entries are not served after it returns."""

    def __init__(self):
        self.local = LocMemCache("engines-memory", {"TIMEOUT": settings.REDIS_TTL, "OPTIONS": {"MAX_ENTRIES": 5000}})
        self._unpublished: set[str] = set()
        self._lock = threading.Lock()

    def _publish_invalidations(self) -> None:
        with self._lock:
            keys, self._unpublished = self._unpublished, set()
        for key in keys:
            if redis_guard.call(cache.set, key, time.time_ns(), None, default=False) is False:
                with self._lock:
                    self._unpublished.add(key)

    def get(self, key: str):
        if self._unpublished and redis_guard.usable():
            self._publish_invalidations()
        value = redis_guard.call(cache.get, key)
        return self.local.get(key) if value is _MISSING else value

    def set(self, key: str, value, timeout: int | None = None) -> None:
        timeout = settings.REDIS_TTL if timeout is None else timeout
        self.local.set(key, value, timeout)
        redis_guard.call(cache.set, key, value, timeout)

    def incr_version(self, key: str) -> None:
        version = time.time_ns()
        self.local.set(key, version, None)
        if redis_guard.call(cache.set, key, version, None, default=False) is False:
            with self._lock:
                self._unpublished.add(key)

    def reset_local(self) -> None:
        self.local.clear()
        self._unpublished.clear()
        redis_guard.reset()


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
    turns = adapters.turns_between(conversation_id, since, limit=limit + 1)
    # The pipeline stores the message being answered before asking the engine: it is the new
    # message, not memory.
    if turns and turns[-1]["role"] == "user" and turns[-1]["content"] == query:
        turns = turns[:-1]
    turns = [
        {key: value for key, value in turn.items() if key in ("role", "content", "name") and value}
        for turn in turns[-limit:]
    ]
    summary_row = ConversationSummary.objects.filter(conversation_id=conversation_id).first()
    facts = adapters.contact_facts(conversation_id, contact) if contact else []
    covered_until = summary_row.covered_until if summary_row else None
    return MemorySnapshot(
        turns=turns,
        summary=summary_row.summary if summary_row else "",
        facts=rank_facts(facts, query, settings.ENGINE_MEMORY_MAX_FACTS),
        summary_due=adapters.has_turns_between(conversation_id, covered_until, since),
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
    snapshot = await run_db(load_memory, conversation_id, contact, query, limit)
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


SUMMARY_PROMPT = (
    "你负责为微信客服对话维护一段滚动摘要，供之后的客服参考。把“已有摘要”和“新的对话”合并成一段不超过 "
    "300 字的简体中文摘要：保留客户的诉求、已确认的事实（型号、地址、订单/合同、故障现象）、已给出的方案和"
    "未解决的问题；不要寒暄，不要编造。只输出摘要本身。"
)
SUMMARY_BATCH = 60


def _uncovered_turns(conversation_id: int) -> tuple[ConversationSummary, list[dict], object]:
    window_start = timezone.now() - timedelta(minutes=settings.ENGINE_MEMORY_WINDOW_MINUTES)
    row, _ = ConversationSummary.objects.get_or_create(conversation_id=conversation_id)
    start = row.covered_until or timezone.now() - timedelta(days=3650)
    turns = adapters.turns_between(conversation_id, start, window_start, limit=SUMMARY_BATCH, newest=False)
    turns = [turn for turn in turns if row.covered_until is None or turn["at"] > row.covered_until]
    return row, turns, window_start


def _save_summary(row: ConversationSummary, summary: str, covered_until) -> None:
    ConversationSummary.objects.filter(pk=row.pk).update(
        summary=summary, covered_until=covered_until, updated_at=timezone.now()
    )


async def refresh_summary(conversation_id: int) -> bool:
    """Fold the turns that left the recent-memory window into the conversation's rolling summary
    (one cheap-route LLM call per batch of 60 turns). True when the summary changed."""
    row, turns, _ = await run_db(_uncovered_turns, conversation_id)
    if not turns:
        return False
    transcript = "\n".join(f"{'客户' if turn['role'] == 'user' else '客服'}：{turn['content']}" for turn in turns)
    completion = await gateway.complete(
        [
            {"role": "system", "content": SUMMARY_PROMPT},
            {"role": "user", "content": f"已有摘要：{row.summary or '（无）'}\n\n新的对话：\n{transcript}"},
        ],
        route="cheap",
        max_tokens=600,
        timeout=settings.ENGINE_LLM_TIMEOUT,
        user={"agent": None, "customer": None},
    )
    if completion.offline or not completion.content.strip():
        return False  # keep the old summary and the turns uncovered: the next refresh retries
    await run_db(_save_summary, row, completion.content.strip()[:1000], turns[-1]["at"])
    invalidate_memory(conversation_id)
    return True
