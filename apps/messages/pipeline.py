"""Deciding messages: claim (in arrival order per conversation), decide (rules → engine → the decision
table), store the reply, push it. Async throughout; the edges are the decision queue's consumer (a worker
process's event loop) and the Celery task `process_message` (retries), each entering with one call.

Arrival order without a lock: a worker claims only its conversation's oldest undecided message, and only
while nobody else is deciding one of them; then it goes on through the conversation. A worker that finds the
conversation busy leaves: the one deciding it takes this message too.

Fragments: with PIPELINE_DEBOUNCE_MS, the worker holding a claim waits until that long after the newest of the
customer's messages and takes the ones that followed within the window (store.take_fragments): one question,
one decision, one reply to the last fragment; the earlier ones are marked `joined`.

Idempotent: a decided message is a no-op, a message left `processing` longer than PIPELINE_CLAIM_TTL (its
worker died) is claimed again, and a message has at most one reply (the store's insert is conditional).
"""

import asyncio
import dataclasses
import logging
import time
from decimal import Decimal

import psycopg
import redis.exceptions
from django.conf import settings
from django.db import DatabaseError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.core import aio
from apps.core.db import run_db
from apps.core.jobs import enqueue as enqueue_task
from apps.core.tracing import bind as trace
from apps.engines import manager as engines
from apps.engines.base import EngineReply
from apps.engines.memory import invalidate_memory
from apps.knowledge import services as knowledge
from apps.messages import decision, metrics, outbox, queue
from apps.messages.models import Message, Reply
from apps.messages.store import Claimed, Fragment, NewReply, OutboxReply, store
from apps.rules.services import evaluate as evaluate_rules
from apps.rules.types import MessageFacts, RuleDecision

logger = logging.getLogger("wxcs.pipeline")

APOLOGY = "抱歉，这个问题我暂时无法准确回答，已为您转接人工客服，请稍候。"
RETRY_TASK = "apps.messages.tasks.process_message"
# Fragments joined into one question at most: a customer who never pauses still gets answers.
MAX_FRAGMENTS = 20


class EngineTimeout(Exception):
    """The engine did not answer within PIPELINE_ENGINE_TIMEOUT."""


# Worth another attempt later; anything else is a defect and fails the message at once (visibly).
TRANSIENT_ERRORS = (
    OperationalError,
    psycopg.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    EngineTimeout,
)


# --- the consumer's and the retry task's entry points ------------------------------------------------
async def handle(entry: queue.Entry) -> None:
    """Decide a message taken from the decision queue; trouble continues as the retrying Celery task."""
    try:
        await process(entry.message_id, entry.conversation_id, announce=entry.announce)
    except TRANSIENT_ERRORS as exc:
        logger.warning("message %s: %r, retrying as a task", entry.message_id, exc)
        await _schedule_retry(entry.message_id, entry.conversation_id, attempt=1, countdown=1.0)
    except Exception as exc:
        logger.exception("message %s could not be decided", entry.message_id)
        await run_db(fail, entry.message_id, f"{exc.__class__.__name__}: {exc}")


async def _schedule_retry(message_id: int, conversation_id: int, *, attempt: int, countdown: float) -> None:
    await run_db(
        enqueue_task, RETRY_TASK, message_id, conversation_id=conversation_id, attempt=attempt, countdown=countdown
    )


async def process(message_id: int, conversation_id: int, *, announce: bool = False) -> str:
    """Decide the conversation's undecided messages in arrival order, `message_id` among them. "decided" when
    this call decided `message_id`; "done" when it was decided already, or another worker is on the
    conversation and will decide it."""
    outcome, more = "done", True
    while more and (claimed := await store().claim(conversation_id, settings.PIPELINE_HISTORY_TURNS, _abandoned())):
        held = [claimed.message_id]
        try:
            claimed = await join_fragments(claimed, held)
            # someone may wait for a message whose own queue entry lost the race to this one: tell them
            more = await decide(claimed, announce=announce or bool(claimed.joined) or claimed.message_id != message_id)
        except BaseException:
            for held_id in held:  # the retry claims them again
                await store().release(held_id)
            raise
        if message_id in held:
            outcome = "decided"
    return outcome


async def join_fragments(claimed: Claimed, held: list[int]) -> Claimed:
    """The claimed message and the customer's messages that followed it within PIPELINE_DEBOUNCE_MS of each
    other, as one question (the last fragment's id and trace); waits until the window after the newest has
    passed. `held` gets each fragment's id as it is claimed. Its claimed_at becomes the end of the wait, so the
    reply's queue_wait (from the first fragment) includes the debounce."""
    window = settings.PIPELINE_DEBOUNCE_MS / 1000
    if window <= 0:
        return claimed
    first = Fragment(claimed.message_id, claimed.content, claimed.is_at_me, claimed.received_at, claimed.trace_id)
    fragments = [first]
    while len(fragments) < MAX_FRAGMENTS:
        newest = fragments[-1]
        pause = (newest.received_at - timezone.now()).total_seconds() + window
        if pause > 0:
            await asyncio.sleep(pause)
        following = await store().take_fragments(
            claimed.conversation_id, newest, claimed.sender, window, MAX_FRAGMENTS - len(fragments)
        )
        if not following:
            break
        held.extend(fragment.message_id for fragment in following)
        fragments.extend(following)
    if len(fragments) == 1:
        return dataclasses.replace(claimed, claimed_at=timezone.now())
    return dataclasses.replace(
        claimed,
        claimed_at=timezone.now(),
        message_id=fragments[-1].message_id,
        trace_id=fragments[-1].trace_id,
        content="\n".join(fragment.content for fragment in fragments),
        is_at_me=any(fragment.is_at_me for fragment in fragments),
        joined=tuple(fragment.message_id for fragment in fragments[:-1]),
    )


def _abandoned():
    """Claims older than this were made by a worker that is gone."""
    return timezone.now() - timezone.timedelta(seconds=settings.PIPELINE_CLAIM_TTL)


# --- deciding one claimed message ----------------------------------------------------------------------
async def decide(claimed: Claimed, *, announce: bool = False) -> bool:
    """Rules, then (when they leave it to the engine) the engine; store and push the outcome. True when the
    conversation has more undecided messages."""
    with trace(claimed.trace_id):
        started = time.perf_counter()
        latency = {"queue_wait": _ms(claimed.claimed_at - claimed.received_at)}
        rule = await evaluate_rules(_facts(claimed))
        latency["rules"] = _ms_since(started)
        situation = decision.Situation(claimed.chat_type, claimed.is_at_me, claimed.taken_over)
        policy = decision.Policy(settings.REVIEW_CONFIDENCE_THRESHOLD, settings.GROUP_REPLY_REQUIRES_AT)
        engine_reply = None
        if decision.needs_engine(situation, rule, policy):
            engine_reply = await _run_engine(claimed, rule)
            latency.update({k: round(float(v), 2) for k, v in engine_reply.latency_ms.items() if k != "total"})
        outcome = decision.decide(situation, rule, engine_reply, policy)
        decision_ms = (time.perf_counter() - started) * 1000
        latency = {"retrieval": 0.0, "llm": 0.0, **latency, "total": round(latency["queue_wait"] + decision_ms, 2)}
        reply = _reply(claimed, outcome, rule, engine_reply, latency, decision_ms)
        stored = await store().insert_reply(reply, claimed.joined)
        if stored.stored:  # else decided meanwhile by someone else: theirs stands
            await _deliver(claimed, reply, stored.reply_id, announce)
            _record(claimed, outcome, reply)
            if engine_reply is None:  # a turn the engine did not write: its cached memory must not hide it
                await invalidate_memory(claimed.conversation_id)
        return stored.more


def _facts(claimed: Claimed) -> MessageFacts:
    return MessageFacts(
        agent_id=claimed.agent_id,
        chat_name=claimed.chat_name,
        chat_type=claimed.chat_type,
        sender=claimed.sender,
        content=claimed.content,
        is_at_me=claimed.is_at_me,
        received_at=claimed.received_at,
        conversation_id=claimed.conversation_id,
    )


def history(claimed: Claimed) -> list[dict]:
    """OpenAI-style history: earlier messages with the replies the customer got, then this one."""
    sent = (Reply.Status.QUEUED, Reply.Status.SENT, Reply.Status.DELIVERED)
    turns = []
    for turn in claimed.earlier:
        turns.append({"role": "user", "content": turn.content})
        if turn.reply and turn.action == Reply.Action.REPLY and turn.status in sent:
            turns.append({"role": "assistant", "content": turn.reply})
    turns.append({"role": "user", "content": claimed.content})
    return turns


async def _run_engine(claimed: Claimed, rule: RuleDecision) -> EngineReply:
    personality_id = rule.personality_id or claimed.personality_id
    engine = await engines.resolve_engine(
        claimed.conversation_id, personality_id=personality_id, override=rule.engine or claimed.engine_override
    )
    try:
        async with asyncio.timeout(settings.PIPELINE_ENGINE_TIMEOUT):
            return await engine.generate_response(
                history(claimed), claimed.conversation_id, personality_id=personality_id
            )
    except TimeoutError as exc:
        await invalidate_memory(claimed.conversation_id)  # cut off: it may have cached a half-finished turn
        raise EngineTimeout(f"no answer within {settings.PIPELINE_ENGINE_TIMEOUT}s") from exc


def _reply(claimed, outcome, rule, engine_reply, latency, decision_ms) -> NewReply:
    now = timezone.now()
    pushed = outcome.status == Reply.Status.QUEUED  # on its way to the agent as soon as it is stored
    provenance = {}
    if engine_reply is not None:
        provenance = {
            "engine": engine_reply.engine[:50],
            "model": (engine_reply.model or "")[:100],
            "provider": (engine_reply.provider or "")[:50],
            "input_tokens": engine_reply.input_tokens,
            "output_tokens": engine_reply.output_tokens,
            "cost": Decimal(str(round(engine_reply.cost or 0.0, 6))),
            "citations": engine_reply.citations,
            "tool_calls": engine_reply.tool_calls,
        }
    if rule.rule_id is not None or rule.action != "none":
        provenance.update(rule_id=rule.rule_id, rule_name=rule.rule_name[:100])
    return NewReply(
        message_id=claimed.message_id,
        conversation_id=claimed.conversation_id,
        agent_id=claimed.agent_id,
        action=outcome.action,
        status=Reply.Status.SENT if pushed else outcome.status,
        source=outcome.source,
        content=outcome.content,
        draft=outcome.content,
        confidence=outcome.confidence,
        review_reason=outcome.review_reason[:200],
        at=claimed.sender if claimed.chat_type == "group" else "",
        latency_ms=latency,
        decision_ms=round(decision_ms, 2),
        created_at=now,
        queued_at=now if pushed else None,
        pushed_at=now if pushed else None,
        delivery_attempts=1 if pushed else 0,
        **provenance,
    )


async def _deliver(claimed: Claimed, reply: NewReply, reply_id: int, announce: bool) -> None:
    if reply.status in Reply.OUTBOX:
        pushed = OutboxReply(reply_id, reply.message_id, claimed.chat_name, reply.content, reply.at, reply.created_at)
        await outbox.push(claimed.agent_id, pushed)
    if announce:
        for message_id in (*claimed.joined, claimed.message_id):
            await outbox.announce_decision(message_id)


def _record(claimed: Claimed, outcome: decision.Outcome, reply: NewReply) -> None:
    latency = reply.latency_ms
    metrics.observe_decision(latency["total"] / 1000)
    if outcome.handoff:
        metrics.handoff(outcome.handoff)
        if outcome.knowledge_gap:  # tell the knowledge base the bot could not answer it (off the reply's path)
            aio.spawn(_record_gap(claimed.content, outcome.review_reason), what="recording a knowledge gap")
    logger.info(
        "message %s decided: %s/%s confidence=%.2f %s ms",
        claimed.message_id,
        reply.action,
        reply.status,
        reply.confidence,
        latency["total"],
    )


async def _record_gap(question: str, reason: str) -> None:
    try:
        await run_db(knowledge.record_gap, question, reason)
    except DatabaseError:
        logger.warning("knowledge gap not recorded", exc_info=True)


def _ms(delta) -> float:
    return round(delta.total_seconds() * 1000, 2)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


# --- giving up, and the sweep ---------------------------------------------------------------------------
def fail(message_id: int, error: str) -> Reply | None:
    """The message cannot be decided: keep it visible to supervisors (a pending reply with the apology)."""
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
            metrics.handoff("failed")
        transaction.on_commit(lambda: aio.run(outbox.announce_decision(message_id), timeout=10))
    logger.error("message %s failed: %s", message_id, error[:300])
    return reply


def sweep_stuck(now=None) -> list[int]:
    """Put messages nobody is deciding back on the decision queue: `received` for PIPELINE_SWEEP_AFTER seconds,
    or `processing` past PIPELINE_CLAIM_TTL (their worker died). Idempotent."""
    now = now or timezone.now()
    after = timezone.timedelta(seconds=settings.PIPELINE_SWEEP_AFTER)
    claim_ttl = timezone.timedelta(seconds=settings.PIPELINE_CLAIM_TTL + 5)
    stuck = list(
        Message.objects.filter(
            Q(status=Message.Status.RECEIVED, received_at__lt=now - after)
            | Q(status=Message.Status.PROCESSING, claimed_at__lt=now - max(after, claim_ttl))
        )
        .order_by("id")
        .values_list("id", "conversation_id")[:1000]
    )
    if stuck:
        logger.warning("re-enqueueing %d stuck messages", len(stuck))
        aio.run(queue.enqueue([queue.Entry(mid, cid) for mid, cid in stuck]), timeout=10)
    return [mid for mid, _ in stuck]
