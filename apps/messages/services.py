"""The message pipeline's logic: decide a message (rules → engine), store the reply in the outbox,
push it to the agent, acks, human review and takeover. Plain functions; tasks/views/admin are thin.
"""

import asyncio
import functools
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from types import SimpleNamespace

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from apps.core import aio
from apps.engines import manager as engines
from apps.engines.memory import invalidate_memory
from apps.knowledge import services as knowledge
from apps.messages.models import Conversation, Message, Reply
from apps.monitoring import metrics as monitoring_metrics
from apps.monitoring.tracing import bind as trace
from apps.rules.services import evaluate as evaluate_rules
from apps.rules.types import MessageFacts

logger = logging.getLogger("wxcs.pipeline")

APOLOGY = "抱歉，这个问题我暂时无法准确回答，已为您转接人工客服，请稍候。"


class ConversationBusy(Exception):
    """Another worker is deciding this conversation; retry shortly (keeps arrival order)."""


class TransientError(Exception):
    """Worth a retry with backoff (engine timeout, database hiccup)."""


_forced_engine = None


async def resolve_engine(conversation_id: int, personality_id: int | None, override: str):
    global _forced_engine
    forced = settings.PIPELINE_ENGINE_CLASS
    if forced:  # benchmarks / e2e tests: one engine class for every message, bypassing the manager
        if _forced_engine is None or f"{type(_forced_engine).__module__}.{type(_forced_engine).__name__}" != forced:
            _forced_engine = import_string(forced)()
        return _forced_engine
    return await engines.resolve_engine(conversation_id, personality_id=personality_id, override=override)


def propose_knowledge(question: str, answer: str, reply_id: int) -> None:
    try:
        knowledge.propose_candidate(question, answer, reply_id)
    except Exception:
        logger.warning("knowledge candidate not recorded for reply %s", reply_id, exc_info=True)


def record_handoff(question: str, kind: str, reason: str, *, knowledge_gap: bool) -> None:
    """A message went to a human: count it by `kind` (metrics) and, with `knowledge_gap`, tell the
    knowledge base after commit that the bot could not answer it (logged on failure, never fails the
    decision)."""
    monitoring_metrics.handoff(kind)
    if not knowledge_gap:
        return

    def record_gap():
        try:
            knowledge.record_gap(question, reason)
        except Exception:
            logger.warning("knowledge gap not recorded", exc_info=True)

    transaction.on_commit(record_gap)


# --- conversation lock (arrival order) ----------------------------------------------------------
@contextmanager
def conversation_lock(conversation_id: int, wait: float = 2.0):
    from apps.messages.queue import redis_client

    client = redis_client()
    if client is None:  # no Redis (tests on in-process backends): a row lock does the job
        with transaction.atomic():
            Conversation.objects.select_for_update().filter(pk=conversation_id).exists()
        yield
        return
    key = f"wxcs:conv-lock:{conversation_id}"
    token = uuid.uuid4().hex
    ttl = settings.PIPELINE_LOCK_TTL
    deadline = time.monotonic() + wait
    while not client.set(key, token, nx=True, ex=ttl):
        if time.monotonic() > deadline:
            raise ConversationBusy(conversation_id)
        time.sleep(0.005)
    try:
        yield
    finally:
        # release only our own lock
        client.eval(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
            1,
            key,
            token,
        )


# --- processing ---------------------------------------------------------------------------------
def process(message_id: int, conversation_id: int | None = None) -> str:
    """Decide `message_id` (and any older undecided message of its conversation first).

    Idempotent: a decided message is a no-op; a message left "processing" by a crashed worker is
    reclaimed (we hold the conversation lock, so nobody else is deciding it); the one-to-one
    message→reply constraint makes a second reply impossible.
    """
    if conversation_id is None:
        row = Message.objects.filter(pk=message_id).values_list("conversation_id", "status").first()
        if row is None:
            return "missing"
        conversation_id, status = row
        if status in (Message.Status.DECIDED, Message.Status.FAILED):
            return "done"
    with conversation_lock(conversation_id):
        while True:
            claimed = _claim(conversation_id=conversation_id, upto_id=message_id)
            if claimed is None:
                return "done"
            _decide_claimed(claimed)
            if claimed.id == message_id:
                return "decided"


_batch_pool = None
_batch_pool_lock = threading.Lock()


def process_many(pairs: list[tuple[int, int | None]]) -> list:
    """`process` each (message id, conversation id) concurrently; per message its outcome or exception."""
    global _batch_pool
    with _batch_pool_lock:
        if _batch_pool is None:
            _batch_pool = ThreadPoolExecutor(settings.PIPELINE_BATCH_THREADS, thread_name_prefix="decide")
    futures = [_batch_pool.submit(_process_and_release, mid, cid) for mid, cid in pairs]
    outcomes = []
    for future in futures:
        try:
            outcomes.append(future.result())
        except Exception as exc:  # noqa: BLE001 - the caller retries that message alone
            outcomes.append(exc)
    return outcomes


def _process_and_release(message_id: int, conversation_id: int | None) -> str:
    try:
        return process(message_id, conversation_id)
    finally:
        connection.close()  # back to the pool: these threads outlive the task


_CLAIM_SQL = """
UPDATE wxmessages_message SET status = 'processing', claimed_at = %s, attempts = attempts + 1
WHERE id = ({target}) AND status IN ('received', 'processing')
RETURNING id, agent_id, conversation_id, sender, content, is_at_me, received_at, attempts, trace_id
"""
# PostgreSQL: the claim, the conversation and the recent history in one round trip (the history
# subquery reads the rows before the UPDATE, which is fine: it only looks at earlier messages).
_CLAIM_SQL_PG = """
WITH claimed AS ({claim})
SELECT claimed.*, v.chat_name, v.chat_type, v.taken_over, v.engine_override, v.personality_id,
  (SELECT coalesce(json_agg(json_build_array(h.content, r.content, r.action, r.status) ORDER BY h.id), '[]')
   FROM (SELECT id, content FROM wxmessages_message WHERE conversation_id = claimed.conversation_id
         AND id < claimed.id ORDER BY id DESC LIMIT %s) h
   LEFT JOIN wxmessages_reply r ON r.message_id = h.id)
FROM claimed JOIN wxmessages_conversation v ON v.id = claimed.conversation_id
"""
_NEXT = (
    "SELECT id FROM wxmessages_message WHERE conversation_id = %s AND id <= %s"
    " AND status IN ('received', 'processing') ORDER BY id LIMIT 1"
)
_FIELDS = ("id", "agent_id", "conversation_id", "sender", "content", "is_at_me", "received_at", "attempts", "trace_id")
_CONVERSATION_FIELDS = ("chat_name", "chat_type", "taken_over", "engine_override", "personality_id")


def _claim(*, message_id: int | None = None, conversation_id: int | None = None, upto_id: int | None = None):
    """Mark the message (or the conversation's oldest undecided one) processing and read what deciding
    it needs: the message, its conversation and `earlier` (content, reply, action, status) rows, oldest
    first. None when there is nothing to claim. One round trip on PostgreSQL."""
    now = timezone.now()
    if message_id is not None:
        claim, params = _CLAIM_SQL.format(target="%s"), [now, message_id]
    else:
        claim, params = _CLAIM_SQL.format(target=_NEXT), [now, conversation_id, upto_id]
    turns = settings.PIPELINE_HISTORY_TURNS
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_CLAIM_SQL_PG.format(claim=claim), [*params, turns])
            row = cursor.fetchone()
        if row is None:
            return None
        values = dict(zip(_FIELDS, row, strict=False))
        conversation = dict(zip(_CONVERSATION_FIELDS, row[len(_FIELDS) :], strict=False))
        earlier = [tuple(item) for item in row[-1]]
    else:  # SQLite: let the ORM convert the values, then read the rest
        params[0] = Message._meta.get_field("claimed_at").get_db_prep_value(now, connection)
        with connection.cursor() as cursor:
            cursor.execute(claim, params)
            row = cursor.fetchone()
        if row is None:
            return None
        values = Message.objects.filter(pk=row[0]).values(*_FIELDS).get()
        conversation = Conversation.objects.filter(pk=values["conversation_id"]).values(*_CONVERSATION_FIELDS).get()
        earlier = list(
            Message.objects.filter(conversation_id=values["conversation_id"], id__lt=values["id"])
            .order_by("-id")
            .values_list("content", "reply__content", "reply__action", "reply__status")[:turns]
        )[::-1]
    return SimpleNamespace(
        claimed_at=now,
        conversation=SimpleNamespace(id=values["conversation_id"], **conversation),
        earlier=earlier,
        **values,
    )


def _history(message) -> list[dict]:
    """OpenAI-style history: the claimed `earlier` messages with their sent replies, then this one."""
    sent = (Reply.Status.QUEUED, Reply.Status.SENT, Reply.Status.DELIVERED)
    history = []
    for content, reply, action, status in message.earlier:
        history.append({"role": "user", "content": content})
        if reply and action == Reply.Action.REPLY and status in sent:
            history.append({"role": "assistant", "content": reply})
    history.append({"role": "user", "content": message.content})
    return history


def decide(message_id: int) -> Reply | None:
    """Decide one message now (no conversation lock: `process` is the ordered entry point)."""
    claimed = _claim(message_id=message_id)
    if claimed is None:
        return None
    return _decide_claimed(claimed)


def _decide_claimed(message) -> Reply:
    if message.attempts > 1:  # claimed before: maybe the reply was stored and the worker died
        existing = Reply.objects.filter(message_id=message.id).first()
        if existing is not None:
            Message.objects.filter(pk=message.id).update(status=Message.Status.DECIDED, decided_at=timezone.now())
            if existing.status in Reply.OUTBOX:
                transaction.on_commit(lambda: push(existing, trace_id=message.trace_id))
            return existing
    with trace(message.trace_id):
        return _decide(message, message.claimed_at)


def _decide(message: Message, claimed_at) -> Reply:
    conversation = message.conversation
    started = time.perf_counter()
    latency = {"queue_wait": round((claimed_at - message.received_at).total_seconds() * 1000, 2)}
    fields = {"action": Reply.Action.REPLY, "source": Reply.Source.ENGINE, "confidence": 0.0}
    review_reason = ""
    handoff = ""  # why a human gets this message (metrics label), "" when the bot answers or stays silent
    group_silent = conversation.chat_type == "group" and not message.is_at_me and settings.GROUP_REPLY_REQUIRES_AT

    t = time.perf_counter()
    facts = MessageFacts(
        agent_id=message.agent_id,
        chat_name=conversation.chat_name,
        chat_type=conversation.chat_type,
        sender=message.sender,
        content=message.content,
        is_at_me=message.is_at_me,
        received_at=message.received_at,
        conversation_id=conversation.id,
    )
    rule = evaluate_rules(facts)
    latency["rules"] = round((time.perf_counter() - t) * 1000, 2)
    if rule.rule_id is not None or rule.action != "none":
        fields.update(rule_id=rule.rule_id, rule_name=rule.rule_name[:100])

    engine_reply = None
    if rule.action == "ignore" or (group_silent and rule.action in ("none", "route")):
        fields.update(
            action=Reply.Action.IGNORE,
            source=Reply.Source.RULE,
            confidence=1.0,
            review_reason=rule.reason[:200] if rule.action == "ignore" else "group message without @",
        )
        status = Reply.Status.SKIPPED
    elif rule.action == "reply":
        fields.update(content=rule.reply, source=Reply.Source.RULE, confidence=1.0)
        status = Reply.Status.QUEUED
    elif rule.action == "handoff":
        fields.update(action=Reply.Action.TRANSFER_HUMAN, source=Reply.Source.RULE, confidence=1.0)
        status, review_reason = Reply.Status.PENDING_REVIEW, f"handoff rule: {rule.rule_name or rule.reason}"
        handoff = "rule"
    else:
        history = _history(message)
        personality_id = rule.personality_id or conversation.personality_id
        override = rule.engine or conversation.engine_override
        # The engine caches memory retrievals per conversation version; turns it did not write (rule
        # replies, approved drafts, an answer cut off by the timeout) would otherwise be missed.
        invalidate_memory(conversation.id)
        if not connection.in_atomic_block:
            connection.close()  # give the pooled connection back while the engine (LLM) is awaited
        engine_reply = _run_engine(history, conversation.id, personality_id, override)
        fields.update(
            content=engine_reply.content,
            confidence=float(engine_reply.confidence),
            engine=engine_reply.engine[:50],
            model=(engine_reply.model or "")[:100],
            provider=(engine_reply.provider or "")[:50],
            input_tokens=engine_reply.input_tokens,
            output_tokens=engine_reply.output_tokens,
            cost=Decimal(str(round(engine_reply.cost or 0.0, 6))),
            citations=engine_reply.citations,
            tool_calls=engine_reply.tool_calls,
        )
        for key in ("retrieval", "llm", "memory", "tools"):
            if key in engine_reply.latency_ms:
                latency[key] = round(float(engine_reply.latency_ms[key]), 2)
        status = Reply.Status.QUEUED
        if engine_reply.handoff:
            fields["action"] = Reply.Action.TRANSFER_HUMAN
            status, review_reason = Reply.Status.PENDING_REVIEW, f"engine handoff: {engine_reply.handoff_reason}"
            handoff = "engine"
        elif engine_reply.confidence < settings.REVIEW_CONFIDENCE_THRESHOLD:
            status = Reply.Status.PENDING_REVIEW
            review_reason = f"low confidence {engine_reply.confidence:.2f}"
            handoff = "low_confidence"
    if status == Reply.Status.QUEUED and conversation.taken_over:
        status, review_reason = Reply.Status.PENDING_REVIEW, "conversation taken over"
        handoff = "taken_over"
    latency.setdefault("retrieval", 0.0)
    latency.setdefault("llm", 0.0)
    decision_ms = (time.perf_counter() - started) * 1000
    latency["total"] = round(latency["queue_wait"] + decision_ms, 2)
    now = timezone.now()
    fields.setdefault("review_reason", review_reason[:200])
    if review_reason:
        fields["review_reason"] = review_reason[:200]
    reply = Reply(
        message_id=message.id,
        conversation_id=conversation.id,
        agent_id=message.agent_id,
        status=status,
        draft=fields.get("content", ""),
        at=message.sender if conversation.chat_type == "group" else "",
        latency_ms=latency,
        decision_ms=round(decision_ms, 2),
        created_at=now,
        queued_at=now if status == Reply.Status.QUEUED else None,
        **fields,
    )
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        stored = _store_reply_pg(reply, now)
        if not stored:  # someone else stored the reply meanwhile: exactly one wins
            return Reply.objects.get(message_id=message.id)
        push(reply, chat=conversation.chat_name)
    else:
        try:
            with transaction.atomic():
                reply.save(force_insert=True)
                Message.objects.filter(pk=message.id).update(status=Message.Status.DECIDED, decided_at=now)
                transaction.on_commit(lambda: push(reply, chat=conversation.chat_name))
        except IntegrityError:  # someone else stored the reply meanwhile: exactly one wins
            Message.objects.filter(pk=message.id).update(status=Message.Status.DECIDED, decided_at=now)
            return Reply.objects.get(message_id=message.id)
    monitoring_metrics.observe_decision(latency["total"] / 1000)
    if handoff:
        record_handoff(message.content, handoff, review_reason, knowledge_gap=handoff != "taken_over")
    logger.info(
        "message %s decided: %s/%s confidence=%.2f %s ms",
        message.id,
        reply.action,
        reply.status,
        reply.confidence,
        latency["total"],
    )
    return reply


@functools.cache
def _store_reply_statement() -> tuple[list, str]:
    fields = [f for f in Reply._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    sql = (
        f"WITH r AS (INSERT INTO wxmessages_reply ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"  # noqa: S608
        " ON CONFLICT (message_id) DO NOTHING RETURNING id),"
        " m AS (UPDATE wxmessages_message SET status = 'decided', decided_at = %s WHERE id = %s)"
        " SELECT id FROM r"
    )  # column names from the model, values bound
    return fields, sql


def _store_reply_pg(reply: Reply, now) -> bool:
    """One statement, one round trip: insert the reply (unless the message already has one) and mark
    the message decided. False when another reply won."""
    fields, sql = _store_reply_statement()
    values = [f.get_db_prep_save(getattr(reply, f.attname), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, now, reply.message_id])
        row = cursor.fetchone()
    if row is None:
        return False
    reply.id = reply.pk = row[0]
    reply._state.adding = False
    return True


def _run_engine(history, conversation_id, personality_id, override):
    async def call():
        engine = await resolve_engine(conversation_id, personality_id, override)
        return await engine.generate_response(history, conversation_id, personality_id=personality_id)

    try:
        return aio.run(asyncio.wait_for(call(), settings.PIPELINE_ENGINE_TIMEOUT))
    except TimeoutError as exc:
        raise TransientError("engine timed out") from exc


def fail(message_id: int, error: str) -> Reply | None:
    """Retries exhausted: keep the message visible to supervisors (a pending reply with the apology)."""
    now = timezone.now()
    message = Message.objects.select_related("conversation").filter(pk=message_id).first()
    if message is None:
        return None
    with transaction.atomic():
        Message.objects.filter(pk=message_id).update(status=Message.Status.FAILED, error=error[:2000], decided_at=now)
        reply, created = Reply.objects.get_or_create(
            message_id=message_id,
            defaults={
                "conversation_id": message.conversation_id,
                "agent_id": message.agent_id,
                "action": Reply.Action.TRANSFER_HUMAN,
                "status": Reply.Status.PENDING_REVIEW,
                "content": APOLOGY,
                "draft": APOLOGY,
                "review_reason": f"processing failed: {error[:150]}",
                "created_at": now,
                "latency_ms": {"queue_wait": 0.0, "rules": 0.0, "retrieval": 0.0, "llm": 0.0, "total": 0.0},
                "at": message.sender if message.conversation.chat_type == "group" else "",
            },
        )
        if created:
            record_handoff(message.content, "failed", "processing failed", knowledge_gap=False)
        transaction.on_commit(lambda: push(reply, trace_id=message.trace_id))
    return reply


# --- delivery -----------------------------------------------------------------------------------
def agent_group(agent_id: str) -> str:
    return f"agent.{agent_id}"


def message_group(message_id: int) -> str:
    return f"msg.{message_id}"


def reply_frame(reply: Reply, chat: str | None = None) -> dict:
    return {
        "type": "reply",
        "reply_id": reply.id,
        "message_id": reply.message_id,
        "chat": chat if chat is not None else reply.conversation.chat_name,
        "content": reply.content,
        "at": reply.at or None,
        "created_at": reply.created_at.isoformat(),
    }


def decision(reply: Reply | None, message_id: int) -> dict:
    """The seed's `?wait` contract."""
    if reply is None:
        return {
            "action": None,
            "content": "",
            "confidence": None,
            "message_id": message_id,
            "reply_id": None,
            "status": "processing",
        }
    action = reply.action
    content = reply.content
    if reply.status in (Reply.Status.PENDING_REVIEW, Reply.Status.REJECTED):
        action, content = Reply.Action.TRANSFER_HUMAN, ""
    elif reply.status == Reply.Status.SKIPPED:
        action, content = Reply.Action.IGNORE, ""
    return {
        "action": action,
        "content": content,
        "confidence": reply.confidence,
        "message_id": message_id,
        "reply_id": reply.id,
        "status": reply.status,
    }


def push(reply: Reply, chat: str | None = None, trace_id=None) -> None:
    """After commit: the agent's group gets outbox replies; anyone waiting on the message gets the decision.
    Runs under the message's trace: `trace_id`, else the loaded message's, else the caller's binding."""
    if trace_id is None and Reply.message.is_cached(reply):
        trace_id = reply.message.trace_id
    if trace_id is None:
        _push(reply, chat)
        return
    with trace(trace_id):
        _push(reply, chat)


def _push(reply: Reply, chat: str | None) -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    events = [(message_group(reply.message_id), {"type": "decision.ready", "message_id": reply.message_id})]
    if reply.status in Reply.OUTBOX:
        if chat is None:
            chat = Conversation.objects.filter(pk=reply.conversation_id).values_list("chat_name", flat=True).first()
        events.append((agent_group(reply.agent_id), {"type": "reply.push", "frame": reply_frame(reply, chat)}))

    async def send():
        await asyncio.gather(*(layer.group_send(group, event) for group, event in events))

    try:
        aio.run(send(), timeout=10)
    except Exception:  # the outbox keeps it; the agent gets it on reconnect
        logger.warning("push of reply %s failed; it stays in the outbox", reply.id, exc_info=True)


def outbox(agent_id: str, limit: int = 500) -> list[dict]:
    """Every unacked reply of the agent, oldest first (pushed on (re)connect)."""
    rows = (
        Reply.objects.filter(agent_id=agent_id, status__in=Reply.OUTBOX)
        .select_related("conversation")
        .order_by("id")[:limit]
    )
    return [reply_frame(reply) for reply in rows]


def mark_sent(agent_id: str, reply_ids: list[int]) -> int:
    return Reply.objects.filter(agent_id=agent_id, id__in=reply_ids, status__in=Reply.OUTBOX).update(
        status=Reply.Status.SENT, pushed_at=timezone.now(), delivery_attempts=F("delivery_attempts") + 1
    )


class AckError(Exception):
    pass


def ack(agent_id: str, reply_id, status: str, error: str = "") -> dict:
    """Conditional UPDATE: only the owning agent, only queued/sent → delivered/failed. Repeats are no-ops."""
    if status not in (Reply.Status.DELIVERED, Reply.Status.FAILED):
        raise AckError("status must be delivered or failed")
    try:
        reply_id = int(reply_id)
    except (TypeError, ValueError) as exc:
        raise AckError("reply_id must be an integer") from exc
    updated = Reply.objects.filter(pk=reply_id, agent_id=agent_id, status__in=Reply.OUTBOX).update(
        status=status, acked_at=timezone.now(), delivery_error=(error or "")[:2000]
    )
    if updated:
        trace_id = Message.objects.filter(reply__pk=reply_id).values_list("trace_id", flat=True).first()
        log_ack(reply_id, status, error, trace_id)
        return {"reply_id": reply_id, "status": status, "changed": True}
    current = Reply.objects.filter(pk=reply_id, agent_id=agent_id).values_list("status", flat=True).first()
    if current is None:
        raise LookupError(reply_id)  # unknown or another agent's: 404, never a hint that it exists
    return {"reply_id": reply_id, "status": current, "changed": False}


def log_ack(reply_id: int, status: str, error: str, trace_id) -> None:
    """The delivery outcome, logged under the message's trace (so the trace view ends with it)."""
    with trace(trace_id):
        if status == Reply.Status.DELIVERED:
            logger.info("reply %s delivered by the agent", reply_id)
        else:
            logger.warning("reply %s not delivered by the agent: %s", reply_id, (error or "")[:200])


# --- human review and takeover -------------------------------------------------------------------
def approve(reply_id: int, user=None, content: str | None = None) -> bool:
    """pending_review → queued (optionally edited), then pushed."""
    with transaction.atomic():
        reply = Reply.objects.select_for_update().select_related("message").filter(pk=reply_id).first()
        if reply is None or reply.status != Reply.Status.PENDING_REVIEW:
            return False
        edited = content is not None and content.strip() and content.strip() != reply.content
        if content is not None and content.strip():
            reply.content = content.strip()
        if not reply.content:
            return False
        now = timezone.now()
        reply.action = Reply.Action.REPLY
        reply.status = Reply.Status.QUEUED
        reply.reviewed_by = user if getattr(user, "pk", None) else None
        reply.reviewed_at = now
        reply.queued_at = now
        if edited:
            reply.source = Reply.Source.HUMAN
        reply.save(update_fields=["content", "action", "status", "reviewed_by", "reviewed_at", "queued_at", "source"])
        transaction.on_commit(lambda: push(reply))
        question = reply.message.content
    propose_knowledge(question, reply.content, reply.id)
    return True


def reject(reply_id: int, user=None) -> bool:
    return bool(
        Reply.objects.filter(pk=reply_id, status=Reply.Status.PENDING_REVIEW).update(
            status=Reply.Status.REJECTED,
            reviewed_by=user if getattr(user, "pk", None) else None,
            reviewed_at=timezone.now(),
        )
    )


def take_over(conversation_id: int, user=None) -> None:
    Conversation.objects.filter(pk=conversation_id).update(
        taken_over=True, taken_over_by=user if getattr(user, "pk", None) else None, taken_over_at=timezone.now()
    )


def hand_back(conversation_id: int) -> None:
    """The bot answers this chat again; the agent is told (`hand_back` frame) so it resumes a chat it
    paused because a human typed in it."""
    Conversation.objects.filter(pk=conversation_id).update(taken_over=False, taken_over_by=None, taken_over_at=None)
    row = Conversation.objects.filter(pk=conversation_id).values_list("agent_id", "chat_name").first()
    if row is not None:
        agent_id, chat = row
        transaction.on_commit(lambda: notify_agent(agent_id, {"type": "hand_back", "chat": chat}))


def notify_agent(agent_id: str, frame: dict) -> None:
    """A control frame to every socket of the agent (best effort: not kept if the agent is offline)."""
    from channels.layers import get_channel_layer

    try:
        aio.run(
            get_channel_layer().group_send(agent_group(agent_id), {"type": "agent.frame", "frame": frame}), timeout=10
        )
    except Exception:
        logger.warning("could not notify agent %s", agent_id, exc_info=True)


def agent_takeover(agent_id: str, chat_name: str, active: bool = True) -> bool:
    """The agent saw a human typing in this chat (a self message that is not a bot reply); the
    conversation is created if the server has not seen it yet. True when it existed before."""
    if not chat_name:
        return False
    _, created = Conversation.objects.update_or_create(
        agent_id=agent_id,
        chat_name=chat_name[:200],
        defaults={"taken_over": active, "taken_over_at": timezone.now() if active else None},
    )
    return not created


def pending_review_count() -> int:
    return Reply.objects.filter(status=Reply.Status.PENDING_REVIEW).count()


# --- stats --------------------------------------------------------------------------------------
def stats(days: int = 7, agent_id: str | None = None) -> dict:
    """Per day (server time zone): messages, replies, handoffs, ignored, avg/p95 decision latency, cost."""
    from django.db.models import Count, Sum
    from django.db.models.functions import TruncDate

    tz = timezone.get_current_timezone()
    today = timezone.localdate()
    start_date = today - timezone.timedelta(days=days - 1)
    start = timezone.make_aware(timezone.datetime.combine(start_date, timezone.datetime.min.time()), tz)
    messages = Message.objects.filter(received_at__gte=start)
    replies = Reply.objects.filter(created_at__gte=start)
    if agent_id:
        messages, replies = messages.filter(agent_id=agent_id), replies.filter(agent_id=agent_id)
    per_day = {
        start_date + timezone.timedelta(days=i): {
            "date": (start_date + timezone.timedelta(days=i)).isoformat(),
            "messages": 0,
            "replies": 0,
            "handoffs": 0,
            "ignored": 0,
            "pending_review": 0,
            "delivered": 0,
            "avg_latency_ms": None,
            "p95_latency_ms": None,
            "cost": 0.0,
        }
        for i in range(days)
    }
    for row in messages.annotate(day=TruncDate("received_at", tzinfo=tz)).values("day").annotate(n=Count("id")):
        if row["day"] in per_day:
            per_day[row["day"]]["messages"] = row["n"]
    latencies: dict = {}
    reply_rows = (
        replies.annotate(day=TruncDate("created_at", tzinfo=tz))
        .values("day")
        .annotate(
            replies=Count(
                "id",
                filter=Q(action=Reply.Action.REPLY)
                & ~Q(status__in=(Reply.Status.PENDING_REVIEW, Reply.Status.REJECTED)),
            ),
            handoffs=Count(
                "id",
                filter=Q(action=Reply.Action.TRANSFER_HUMAN)
                | Q(status=Reply.Status.PENDING_REVIEW)
                | Q(review_reason__startswith="conversation taken"),
            ),
            ignored=Count("id", filter=Q(action=Reply.Action.IGNORE)),
            pending=Count("id", filter=Q(status=Reply.Status.PENDING_REVIEW)),
            delivered=Count("id", filter=Q(status=Reply.Status.DELIVERED)),
            cost=Sum("cost"),
        )
    )
    for row in reply_rows:
        if row["day"] in per_day:
            day = per_day[row["day"]]
            day.update(
                replies=row["replies"],
                handoffs=row["handoffs"],
                ignored=row["ignored"],
                pending_review=row["pending"],
                delivered=row["delivered"],
                cost=float(row["cost"] or 0),
            )
    for day_value, total in (
        replies.exclude(latency_ms__total=None)
        .annotate(day=TruncDate("created_at", tzinfo=tz))
        .values_list("day", "latency_ms__total")
    ):
        latencies.setdefault(day_value, []).append(float(total))
    all_latencies = []
    for day_value, values in latencies.items():
        if day_value in per_day and values:
            values.sort()
            all_latencies.extend(values)
            per_day[day_value]["avg_latency_ms"] = round(sum(values) / len(values), 2)
            per_day[day_value]["p95_latency_ms"] = round(_percentile(values, 0.95), 2)
    all_latencies.sort()
    days_list = [per_day[key] for key in sorted(per_day)]
    totals = {
        key: sum(day[key] for day in days_list)
        for key in ("messages", "replies", "handoffs", "ignored", "pending_review", "delivered")
    }
    totals["cost"] = round(sum(day["cost"] for day in days_list), 6)
    totals["avg_latency_ms"] = round(sum(all_latencies) / len(all_latencies), 2) if all_latencies else None
    totals["p95_latency_ms"] = round(_percentile(all_latencies, 0.95), 2) if all_latencies else None
    return {"days": days, "agent_id": agent_id, "per_day": days_list, "totals": totals}


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[index]


def sweep_stuck(now=None) -> list[int]:
    """Re-enqueue messages nobody is deciding: still `received` after PIPELINE_SWEEP_AFTER seconds, or
    `processing` past the conversation lock's TTL (their worker died). Idempotent, so a message whose
    task is merely slow or queued costs one no-op task at worst. Run by beat every 30 s."""
    from apps.messages.queue import enqueue_messages

    now = now or timezone.now()
    after = timezone.timedelta(seconds=settings.PIPELINE_SWEEP_AFTER)
    lock_ttl = timezone.timedelta(seconds=settings.PIPELINE_LOCK_TTL + 5)
    ids = list(
        Message.objects.filter(
            Q(status=Message.Status.RECEIVED, received_at__lt=now - after)
            | Q(status=Message.Status.PROCESSING, claimed_at__lt=now - max(after, lock_ttl))
        )
        .order_by("id")
        .values_list("id", flat=True)[:1000]
    )
    if ids:
        logger.warning("re-enqueueing %d stuck messages", len(ids))
        enqueue_messages(ids)
    return ids
