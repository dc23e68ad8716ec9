"""Conversation memory: recent turns within a window, the rolling summary, long-term facts per contact.

Retrieval is cached in Redis (JSON, key = conversation + query + limit, stored with the conversation's
memory version; TTL settings.REDIS_TTL). `await invalidate_memory(conversation_id)` bumps the conversation's version, so
every cached retrieval of it is left behind at once (no key scan); the pipeline calls it when a message
arrives and the engines call it after answering. When Redis does not answer, an in-process copy takes
over (and Redis is not asked again for a few seconds), so the reply still goes out; invalidations made
meanwhile are replayed to Redis when it answers again.
"""

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.cache.backends.locmem import LocMemCache
from django.utils import timezone

from apps.core import redis
from apps.core.db import run_db
from apps.engines import facts as fact_rules
from apps.engines import metrics
from apps.engines.history import ConversationRef, conversation_history
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
    """Runs Redis commands unless Redis failed in the last REDIS_RETRY_SECONDS, so an outage costs one
    failed call per process every few seconds, not one per message."""

    def __init__(self):
        self._down_until = 0.0

    def usable(self) -> bool:
        return time.monotonic() >= self._down_until

    async def call(self, command: str, *args, default=_MISSING):
        """The command's reply, or `default` (_MISSING when not given) when Redis is down, fails or hangs
        (the client's REDIS_ASYNC_SOCKET_TIMEOUT)."""
        if not self.usable():
            return default
        try:
            return await redis.batched(command, *args)
        except Exception as exc:
            if self.usable():
                logger.warning("Redis unavailable (%s); engines use in-process memory", exc.__class__.__name__)
            self._down_until = time.monotonic() + REDIS_RETRY_SECONDS
            return default

    def reset(self) -> None:
        self._down_until = 0.0


redis_guard = RedisGuard()


def _version_key(conversation_id: int) -> str:
    return redis.key("engines", "memory-version", conversation_id)


def _entry_key(conversation_id: int, kind: str, lookup: str, limit: int) -> str:
    digest = hashlib.sha1(lookup.encode(), usedforsecurity=False).hexdigest()
    return redis.key("engines", kind, conversation_id, limit, digest)


class MemoryCache:
    """Cached retrievals of a conversation, each stored with the conversation's memory version: a hit is
    one round trip (MGET of the version and the entry), and an entry of an older version is a miss.

    Redis first; an in-process copy while Redis is down. Invalidations made during an outage are
    replayed to Redis when it answers again, so its older entries are not served after it returns."""

    def __init__(self):
        self.local = LocMemCache("engines-memory", {"TIMEOUT": settings.REDIS_TTL, "OPTIONS": {"MAX_ENTRIES": 5000}})
        self._unpublished: set[str] = set()

    async def _publish_invalidations(self) -> None:
        keys, self._unpublished = self._unpublished, set()
        for key in keys:
            if await redis_guard.call("SET", key, self.local.get(key) or time.time_ns(), default=False) is False:
                self._unpublished.add(key)

    async def get(self, conversation_id: int, kind: str, lookup: str, limit: int) -> tuple[object | None, int]:
        """(the cached value, or None, and the conversation's current memory version)."""
        version_key, key = _version_key(conversation_id), _entry_key(conversation_id, kind, lookup, limit)
        if self._unpublished and redis_guard.usable():
            await self._publish_invalidations()
        replies = await redis_guard.call("MGET", version_key, key)
        if replies is _MISSING:
            version, entry = self.local.get(version_key) or 0, self.local.get(key)
        else:
            version, entry = int(replies[0] or 0), json.loads(replies[1]) if replies[1] else None
        if entry is None or entry["version"] != version:
            return None, version
        return entry["value"], version

    async def set(self, conversation_id: int, kind: str, lookup: str, limit: int, version: int, value) -> None:
        """Keep `value`, retrieved at memory `version` (read by `get`): stale as soon as the version moves."""
        key, entry = _entry_key(conversation_id, kind, lookup, limit), {"version": version, "value": value}
        self.local.set(key, entry, settings.REDIS_TTL)
        await redis_guard.call("SET", key, json.dumps(entry, ensure_ascii=False), "EX", settings.REDIS_TTL)

    async def invalidate(self, conversation_id: int) -> None:
        key, version = _version_key(conversation_id), time.time_ns()
        self.local.set(key, version, None)
        if await redis_guard.call("SET", key, version, default=False) is False:
            self._unpublished.add(key)

    def reset_local(self) -> None:
        self.local.clear()
        self._unpublished.clear()
        redis_guard.reset()


memory_cache = MemoryCache()


async def invalidate_memory(conversation_id: int) -> None:
    """Forget every cached memory retrieval of this conversation (call when a message arrives)."""
    await memory_cache.invalidate(conversation_id)


def _bigrams(text: str) -> set[str]:
    text = "".join(text.split())
    return {text[i : i + 2] for i in range(len(text) - 1)} or {text}


def rank_facts(facts: list[str], query: str, limit: int) -> list[str]:
    """Facts sharing the most character bigrams with the query first; ties keep recency order."""
    query_grams = _bigrams(query)
    ranked = sorted(enumerate(facts), key=lambda item: (-len(_bigrams(item[1]) & query_grams), item[0]))
    return [fact for _, fact in ranked[:limit]]


def contact_facts(conversation: ConversationRef | None, contact: str, limit: int = 200) -> list[str]:
    """Long-term facts about `contact` in this conversation's chat, newest first."""
    if conversation is None:
        return []
    facts = ContactFact.objects.filter(
        agent_id=conversation.agent_id, chat_name=conversation.chat_name, contact=contact
    )
    return list(facts.values_list("fact", flat=True)[:limit])


def load_memory(conversation_id: int, contact: str, query: str, limit: int) -> MemorySnapshot:
    """The memory straight from the database (no cache). Sync."""
    history = conversation_history()
    since = timezone.now() - timedelta(minutes=settings.ENGINE_MEMORY_WINDOW_MINUTES)
    turns = history.turns_between(conversation_id, since, limit=limit + 1)
    # The pipeline stores the message being answered before asking the engine: it is the new
    # message, not memory.
    if turns and turns[-1]["role"] == "user" and turns[-1]["content"] == query:
        turns = turns[:-1]
    turns = [
        {key: value for key, value in turn.items() if key in ("role", "content", "name") and value}
        for turn in turns[-limit:]
    ]
    summary_row = ConversationSummary.objects.filter(conversation_id=conversation_id).first()
    facts = contact_facts(history.conversation(conversation_id), contact) if contact else []
    covered_until = summary_row.covered_until if summary_row else None
    return MemorySnapshot(
        turns=turns,
        summary=summary_row.summary if summary_row else "",
        facts=rank_facts(facts, query, settings.ENGINE_MEMORY_MAX_FACTS),
        summary_due=history.has_turns_between(conversation_id, covered_until, since),
    )


async def retrieve_memory(
    conversation_id: int, contact: str, query: str, limit: int | None = None
) -> tuple[MemorySnapshot, bool]:
    """(memory, cache_hit) for this conversation/contact and the new message `query`."""
    limit = limit or settings.ENGINE_MEMORY_MAX_TURNS
    lookup = f"{contact}\x00{query}"
    cached, version = await memory_cache.get(conversation_id, "memory", lookup, limit)
    if cached is not None:
        metrics.CACHE.labels("memory", "hit").inc()
        return MemorySnapshot(**cached), True
    metrics.CACHE.labels("memory", "miss").inc()
    snapshot = await run_db(load_memory, conversation_id, contact, query, limit)
    await memory_cache.set(conversation_id, "memory", lookup, limit, version, snapshot.as_dict())
    return snapshot, False


def _store_fact(conversation_id: int, contact: str, fact: str, source: str) -> bool:
    conversation = conversation_history().conversation(conversation_id)
    if conversation is None or not contact or not fact:
        return False
    ContactFact.objects.get_or_create(
        agent_id=conversation.agent_id,
        chat_name=conversation.chat_name,
        contact=contact,
        fact=fact,
        defaults={"source": source, "conversation_id": conversation_id},
    )
    return True


async def remember_fact(conversation_id: int, contact: str, fact: str, source: str = ContactFact.Source.MODEL) -> bool:
    """Keep a long-term fact about the conversation's contact; False if there is no such conversation
    (or no contact, or no fact), or when the "fact" reads as an instruction to the assistant (refused,
    logged without its text). The next retrieval sees it."""
    fact = " ".join(fact.split())[:500]
    if fact_rules.refused(fact, "tool", f"in conversation {conversation_id}"):
        return False
    stored = await run_db(_store_fact, conversation_id, contact, fact, source)
    if stored:
        await invalidate_memory(conversation_id)
    return stored


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
    turns = conversation_history().turns_between(
        conversation_id, start, window_start, limit=SUMMARY_BATCH, newest=False
    )
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
    await invalidate_memory(conversation_id)
    return True
