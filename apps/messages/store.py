"""Persistence of the message path's hot statements, behind one interface with two dialects:

- `PostgresStore` (production): each operation one round trip on this event loop's psycopg pool
  (apps.core.db.pg: autocommit, prepared statements, no thread hop) — the figures that need it are in
  bench/README.md (issue 14);
- `OrmStore` (the embedded SQLite default): the same operations with the Django ORM on apps.core.db.run_db.

Callers use `store()` and never know which; the behaviour (who may ack what, which statuses move where,
what a duplicate returns) lives in ingest / pipeline / outbox, once. Both stores pass the same contract
tests (apps/messages/tests/test_store_contract.py).
"""

import functools
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from psycopg.types.json import Jsonb

from apps.core import db
from apps.messages.models import Conversation, Message, Reply
from apps.messages.validation import InboundMessage

UNDECIDED = (Message.Status.RECEIVED.value, Message.Status.PROCESSING.value)
OUTBOX = tuple(status.value for status in Reply.OUTBOX)


@dataclass(frozen=True)
class Accepted:
    client_id: str
    message_id: int
    conversation_id: int
    created: bool

    def as_dict(self) -> dict:
        return {
            "client_id": self.client_id,
            "message_id": self.message_id,
            "status": "accepted" if self.created else "duplicate",
            "duplicate": not self.created,
        }


@dataclass(frozen=True)
class Turn:
    """An earlier message of the conversation and what became of it."""

    content: str
    reply: str | None
    action: str | None
    status: str | None


@dataclass(frozen=True)
class Claimed:
    """A message marked `processing`, with what deciding it needs."""

    message_id: int
    agent_id: str
    conversation_id: int
    sender: str
    content: str
    is_at_me: bool
    received_at: datetime
    claimed_at: datetime
    attempts: int
    trace_id: uuid.UUID
    chat_name: str
    chat_type: str
    taken_over: bool
    engine_override: str
    personality_id: int | None
    earlier: tuple[Turn, ...]
    joined: tuple[int, ...] = ()  # earlier fragments of this question (PIPELINE_DEBOUNCE_MS), decided with it


@dataclass(frozen=True)
class Fragment:
    """A message taken to be decided with the claimed one before it: the rest of the same question."""

    message_id: int
    content: str
    is_at_me: bool
    received_at: datetime
    trace_id: uuid.UUID


@dataclass(frozen=True)
class OutboxReply:
    reply_id: int
    message_id: int
    chat: str
    content: str
    at: str
    created_at: datetime

    def frame(self) -> dict:
        return {
            "type": "reply",
            "reply_id": self.reply_id,
            "message_id": self.message_id,
            "chat": self.chat,
            "content": self.content,
            "at": self.at or None,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(slots=True)
class NewReply:
    """A decided reply, as the pipeline stores it (the Reply columns a decision fills)."""

    message_id: int
    conversation_id: int
    agent_id: str
    action: str
    status: str
    source: str
    content: str
    draft: str
    confidence: float
    review_reason: str
    at: str
    latency_ms: dict
    decision_ms: float
    created_at: datetime
    queued_at: datetime | None = None
    pushed_at: datetime | None = None
    delivery_attempts: int = 0
    engine: str = ""
    model: str = ""
    provider: str = ""
    rule_id: int | None = None
    rule_name: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    citations: list = field(default_factory=list)
    tool_calls: list = field(default_factory=list)


# The Reply columns a decision leaves at their initial value (review, ack): literals in the PostgreSQL insert.
UNTOUCHED_REPLY_COLUMNS = {"reviewed_by_id": "NULL", "reviewed_at": "NULL", "acked_at": "NULL", "delivery_error": "''"}
JSON_REPLY_COLUMNS = ("latency_ms", "citations", "tool_calls")


@dataclass(frozen=True)
class Stored:
    reply_id: int | None  # None: the message already had a reply (a second decision never makes a second one)
    more: bool  # the conversation has other undecided messages (the worker goes on with them)

    @property
    def stored(self) -> bool:
        return self.reply_id is not None


@dataclass(frozen=True)
class Acked:
    status: str
    changed: bool
    trace_id: uuid.UUID | None


class MessageStore(Protocol):
    async def insert_messages(self, agent_id: str, items: list[InboundMessage]) -> list[Accepted]:
        """Upsert each item's conversation and insert the message unless (agent, client id) exists."""

    async def claim(self, conversation_id: int, history_turns: int, abandoned_before: datetime) -> Claimed | None:
        """Mark the conversation's oldest undecided message processing and read it — unless another worker is
        deciding it (claimed at or after `abandoned_before`): None then, as when nothing is undecided."""

    async def take_fragments(
        self, conversation_id: int, after: Fragment, sender: str, window: float, limit: int
    ) -> list[Fragment]:
        """Mark processing, and read, the conversation's messages that follow `after` as fragments of one question:
        `received`, from `sender`, each within `window` seconds of the one before, none else between; ≤ `limit`."""

    async def release(self, message_id: int) -> None:
        """Give up a claim (the decision failed): the message is `received` again, for whoever retries it."""

    async def insert_reply(self, reply: "NewReply", joined: tuple[int, ...] = ()) -> "Stored":
        """Store the reply and mark its message decided and the `joined` fragments joined (decided_at: when
        stored), unless it already had one; and say whether the conversation has other undecided messages."""

    async def outbox(self, agent_id: str, limit: int, after_id: int = 0) -> list[OutboxReply]:
        """The agent's unacked replies with an id above `after_id`, oldest first (a page of the backlog)."""

    async def mark_sent(self, agent_id: str, reply_ids: list[int]) -> None:
        """Those of the agent's outbox replies were pushed to a socket."""

    async def ack(self, agent_id: str, reply_id: int, status: str, error: str) -> Acked | None:
        """An outbox reply of this agent → `status`; a repeat changes nothing; None when not the agent's."""


@functools.cache
def store() -> MessageStore:
    return PostgresStore() if db.is_postgres() else OrmStore()


def _earlier(rows) -> tuple[Turn, ...]:
    return tuple(Turn(*row) for row in rows)


# --- PostgreSQL ------------------------------------------------------------------------------------
_INSERT_MESSAGE = """
WITH conv AS (
    INSERT INTO wxmessages_conversation AS c
        (agent_id, chat_name, chat_id, chat_type, taken_over, engine_override, created_at, last_message_at)
    VALUES (%(agent)s, %(chat)s, %(chat_id)s, %(chat_type)s, false, '', %(now)s, %(now)s)
    ON CONFLICT (agent_id, chat_name) DO UPDATE SET last_message_at = EXCLUDED.last_message_at
    RETURNING c.id
), ins AS (
    INSERT INTO wxmessages_message
        (agent_id, conversation_id, client_msg_id, trace_id, sender, content, msg_type, is_at_me,
         client_timestamp, received_at, status, attempts, error)
    SELECT %(agent)s, conv.id, %(cid)s, %(trace)s, %(sender)s, %(content)s, %(type)s, %(at)s,
           %(ts)s, %(now)s, %(received)s, 0, ''
    FROM conv
    ON CONFLICT (agent_id, client_msg_id) DO NOTHING
    RETURNING id, conversation_id
)
SELECT id, conversation_id, true FROM ins
UNION ALL
SELECT id, conversation_id, false FROM wxmessages_message WHERE agent_id = %(agent)s AND client_msg_id = %(cid)s
"""
# A duplicate that committed after the statement's snapshot is invisible to it: read it again.
_EXISTING_MESSAGE = (
    "SELECT id, conversation_id, false FROM wxmessages_message WHERE agent_id = %s AND client_msg_id = %s"
)

# The claim, the conversation and the recent history in one round trip (the history subquery reads the rows
# as before the UPDATE: it only looks at earlier messages). Only the conversation's oldest undecided message can
# be claimed, and only while nobody is deciding it: that is what keeps a chat's decisions in arrival order across
# workers (two claims of one row serialise on its row lock; the loser finds it `processing` and gets nothing).
_CLAIM = """
WITH claimed AS (
    UPDATE wxmessages_message SET status = %(processing)s, claimed_at = %(now)s, attempts = attempts + 1
    WHERE id = (SELECT id FROM wxmessages_message WHERE conversation_id = %(conversation)s
                AND status = ANY(%(undecided)s) ORDER BY id LIMIT 1)
      AND (status = %(received)s OR (status = %(processing)s AND claimed_at < %(abandoned)s))
    RETURNING id, agent_id, conversation_id, sender, content, is_at_me, received_at, attempts, trace_id
)
SELECT claimed.*, v.chat_name, v.chat_type, v.taken_over, v.engine_override, v.personality_id,
  (SELECT coalesce(json_agg(json_build_array(h.content, r.content, r.action, r.status) ORDER BY h.id), '[]')
   FROM (SELECT id, content FROM wxmessages_message WHERE conversation_id = claimed.conversation_id
         AND id < claimed.id ORDER BY id DESC LIMIT %(turns)s) h
   LEFT JOIN wxmessages_reply r ON r.message_id = h.id)
FROM claimed JOIN wxmessages_conversation v ON v.id = claimed.conversation_id
"""
# The fragments after a claimed message: the run of `received` messages from its sender, each within the window
# of the one before (the first: of `after`), up to the first message that is not (a gap, another sender, another
# status). Only the worker holding the claim before them calls this (nobody else can claim past it).
_TAKE_FRAGMENTS = """
WITH following AS (
    SELECT id, sender, status,
           received_at - coalesce(lag(received_at) OVER (ORDER BY id), %(since)s) > %(window)s AS gap
    FROM wxmessages_message WHERE conversation_id = %(conversation)s AND id > %(after)s ORDER BY id LIMIT %(limit)s
), run AS (
    SELECT id FROM following WHERE id < coalesce(
        (SELECT min(id) FROM following WHERE gap OR sender <> %(sender)s OR status <> %(received)s),
        9223372036854775807)
)
UPDATE wxmessages_message m SET status = %(processing)s, claimed_at = %(now)s, attempts = attempts + 1
FROM run WHERE m.id = run.id AND m.status = %(received)s
RETURNING m.id, m.content, m.is_at_me, m.received_at, m.trace_id
"""
_RELEASE = "UPDATE wxmessages_message SET status = %s WHERE id = %s AND status = %s"
_OUTBOX = """
SELECT r.id, r.message_id, c.chat_name, r.content, r.at, r.created_at
FROM wxmessages_reply r JOIN wxmessages_conversation c ON c.id = r.conversation_id
WHERE r.agent_id = %s AND r.status = ANY(%s) AND r.id > %s ORDER BY r.id LIMIT %s
"""
_MARK_SENT = """
UPDATE wxmessages_reply SET status = %s, pushed_at = %s, delivery_attempts = delivery_attempts + 1
WHERE agent_id = %s AND id = ANY(%s) AND status = ANY(%s)
"""
_ACK = """
WITH acked AS (
    UPDATE wxmessages_reply SET status = %(status)s, acked_at = %(now)s, delivery_error = %(error)s
    WHERE id = %(reply)s AND agent_id = %(agent)s AND status = ANY(%(outbox)s)
    RETURNING message_id, status
)
SELECT a.status, true, m.trace_id FROM acked a JOIN wxmessages_message m ON m.id = a.message_id
UNION ALL
SELECT r.status, false, NULL FROM wxmessages_reply r WHERE r.id = %(reply)s AND r.agent_id = %(agent)s
ORDER BY 2 DESC LIMIT 1
"""


class PostgresStore:
    async def insert_messages(self, agent_id: str, items: list[InboundMessage]) -> list[Accepted]:
        now = timezone.now()
        params = [_message_params(agent_id, item, now) for item in items]
        async with db.pg() as conn:
            if len(items) == 1:  # one statement is its own transaction: no BEGIN/COMMIT round trips
                rows = [await (await conn.execute(_INSERT_MESSAGE, params[0])).fetchone()]
            else:  # pipeline mode: the whole batch in one round trip, one transaction
                async with conn.transaction(), conn.pipeline():
                    cursors = [await conn.execute(_INSERT_MESSAGE, p) for p in params]
                    rows = [await cursor.fetchone() for cursor in cursors]
            for index, row in enumerate(rows):
                if row is None:
                    cursor = await conn.execute(_EXISTING_MESSAGE, [agent_id, items[index].id])
                    rows[index] = await cursor.fetchone()
        return [Accepted(item.id, row[0], row[1], row[2]) for item, row in zip(items, rows, strict=True)]

    async def claim(self, conversation_id: int, history_turns: int, abandoned_before: datetime) -> Claimed | None:
        params = {
            "processing": Message.Status.PROCESSING.value,
            "received": Message.Status.RECEIVED.value,
            "now": timezone.now(),
            "conversation": conversation_id,
            "undecided": list(UNDECIDED),
            "abandoned": abandoned_before,
            "turns": history_turns,
        }
        async with db.pg() as conn:
            row = await (await conn.execute(_CLAIM, params)).fetchone()
        if row is None:
            return None
        (message_id, agent_id, conv_id, sender, content, is_at_me, received_at, attempts, trace_id) = row[:9]
        chat_name, chat_type, taken_over, engine_override, personality_id, earlier = row[9:]
        return Claimed(
            message_id,
            agent_id,
            conv_id,
            sender,
            content,
            is_at_me,
            received_at,
            params["now"],
            attempts,
            trace_id,
            chat_name,
            chat_type,
            taken_over,
            engine_override,
            personality_id,
            _earlier(earlier),
        )

    async def take_fragments(
        self, conversation_id: int, after: Fragment, sender: str, window: float, limit: int
    ) -> list[Fragment]:
        params = {
            "since": after.received_at,
            "window": timezone.timedelta(seconds=window),
            "conversation": conversation_id,
            "after": after.message_id,
            "limit": limit,
            "sender": sender,
            "received": Message.Status.RECEIVED.value,
            "processing": Message.Status.PROCESSING.value,
            "now": timezone.now(),
        }
        async with db.pg() as conn:
            rows = await (await conn.execute(_TAKE_FRAGMENTS, params)).fetchall()
        return sorted((Fragment(*row) for row in rows), key=lambda fragment: fragment.message_id)

    async def release(self, message_id: int) -> None:
        params = [Message.Status.RECEIVED.value, message_id, Message.Status.PROCESSING.value]
        async with db.pg() as conn:
            await conn.execute(_RELEASE, params)

    async def insert_reply(self, reply: NewReply, joined: tuple[int, ...] = ()) -> Stored:
        values = [getattr(reply, name) for name in _REPLY_COLUMNS]
        for index in _JSON_POSITIONS:
            values[index] = Jsonb(values[index])
        question = [*joined, reply.message_id]
        params = [*values, reply.message_id, question, reply.conversation_id, question, list(UNDECIDED)]
        async with db.pg() as conn:
            reply_id, more = await (await conn.execute(_INSERT_REPLY, params)).fetchone()
        return Stored(reply_id, more)

    async def outbox(self, agent_id: str, limit: int, after_id: int = 0) -> list[OutboxReply]:
        async with db.pg() as conn:
            rows = await (await conn.execute(_OUTBOX, [agent_id, list(OUTBOX), after_id, limit])).fetchall()
        return [OutboxReply(*row) for row in rows]

    async def mark_sent(self, agent_id: str, reply_ids: list[int]) -> None:
        params = [Reply.Status.SENT.value, timezone.now(), agent_id, list(reply_ids), list(OUTBOX)]
        async with db.pg() as conn:
            await conn.execute(_MARK_SENT, params)

    async def ack(self, agent_id: str, reply_id: int, status: str, error: str) -> Acked | None:
        params = {
            "status": status,
            "now": timezone.now(),
            "error": error,
            "reply": reply_id,
            "agent": agent_id,
            "outbox": list(OUTBOX),
        }
        async with db.pg() as conn:
            row = await (await conn.execute(_ACK, params)).fetchone()
        return Acked(*row) if row is not None else None


def _message_params(agent_id: str, item: InboundMessage, now: datetime) -> dict:
    return {
        "agent": agent_id,
        "chat": item.chat_name,
        "chat_id": item.chat_id,
        "chat_type": item.chat_type,
        "now": now,
        "cid": item.id,
        "trace": uuid.uuid4(),
        "sender": item.sender,
        "content": item.content,
        "type": item.type,
        "at": item.is_at_me,
        "ts": item.timestamp,
        "received": Message.Status.RECEIVED.value,
    }


_REPLY_COLUMNS = [f.name for f in fields(NewReply)]
_JSON_POSITIONS = [_REPLY_COLUMNS.index(name) for name in JSON_REPLY_COLUMNS]
# The reply, its message marked decided, and whether the conversation has other undecided messages: one round
# trip. decided_at: when the decision was stored (the reply's created_at is when it was made).
_INSERT_REPLY = (
    f"WITH r AS (INSERT INTO wxmessages_reply ({', '.join([*_REPLY_COLUMNS, *UNTOUCHED_REPLY_COLUMNS])})"  # noqa: S608
    f" VALUES ({', '.join(['%s'] * len(_REPLY_COLUMNS) + list(UNTOUCHED_REPLY_COLUMNS.values()))})"
    " ON CONFLICT (message_id) DO NOTHING RETURNING id),"
    f" m AS (UPDATE wxmessages_message SET status = CASE WHEN id = %s THEN '{Message.Status.DECIDED.value}'"
    f" ELSE '{Message.Status.JOINED.value}' END,"
    " decided_at = clock_timestamp() WHERE id = ANY(%s) AND EXISTS (SELECT 1 FROM r))"
    " SELECT (SELECT id FROM r), EXISTS (SELECT 1 FROM wxmessages_message"
    " WHERE conversation_id = %s AND id <> ALL(%s) AND status = ANY(%s))"
)


# --- the ORM (embedded SQLite) ------------------------------------------------------------------------
class OrmStore:
    async def insert_messages(self, agent_id: str, items: list[InboundMessage]) -> list[Accepted]:
        return await db.run_db(self._insert_messages, agent_id, items)

    def _insert_messages(self, agent_id: str, items: list[InboundMessage]) -> list[Accepted]:
        now = timezone.now()
        with transaction.atomic():
            return [self._insert_message(agent_id, item, now) for item in items]

    def _insert_message(self, agent_id: str, item: InboundMessage, now: datetime) -> Accepted:
        conversation, created = Conversation.objects.get_or_create(
            agent_id=agent_id,
            chat_name=item.chat_name,
            defaults={"chat_id": item.chat_id, "chat_type": item.chat_type, "created_at": now, "last_message_at": now},
        )
        if not created:
            Conversation.objects.filter(pk=conversation.pk).update(last_message_at=now)
        existing = Message.objects.filter(agent_id=agent_id, client_msg_id=item.id).values_list("id", flat=True)
        if (message_id := existing.first()) is not None:
            return Accepted(item.id, message_id, conversation.pk, False)
        message = Message.objects.create(
            agent_id=agent_id,
            conversation=conversation,
            client_msg_id=item.id,
            sender=item.sender,
            content=item.content,
            msg_type=item.type,
            is_at_me=item.is_at_me,
            client_timestamp=item.timestamp,
            received_at=now,
        )
        return Accepted(item.id, message.pk, conversation.pk, True)

    async def claim(self, conversation_id: int, history_turns: int, abandoned_before: datetime) -> Claimed | None:
        return await db.run_db(self._claim, conversation_id, history_turns, abandoned_before)

    def _claim(self, conversation_id: int, history_turns: int, abandoned_before: datetime) -> Claimed | None:
        now = timezone.now()
        undecided = Message.objects.filter(conversation_id=conversation_id, status__in=UNDECIDED)
        target = undecided.order_by("id").values_list("id", flat=True).first()
        claimable = Q(status=Message.Status.RECEIVED) | Q(
            status=Message.Status.PROCESSING, claimed_at__lt=abandoned_before
        )
        if target is None or not Message.objects.filter(claimable, pk=target).update(
            status=Message.Status.PROCESSING, claimed_at=now, attempts=F("attempts") + 1
        ):
            return None
        message = Message.objects.select_related("conversation").get(pk=target)
        conversation = message.conversation
        earlier = (
            Message.objects.filter(conversation_id=conversation_id, id__lt=target)
            .order_by("-id")
            .values_list("content", "reply__content", "reply__action", "reply__status")[:history_turns]
        )
        return Claimed(
            message.pk,
            message.agent_id,
            conversation_id,
            message.sender,
            message.content,
            message.is_at_me,
            message.received_at,
            now,
            message.attempts,
            message.trace_id,
            conversation.chat_name,
            conversation.chat_type,
            conversation.taken_over,
            conversation.engine_override,
            conversation.personality_id,
            _earlier(list(earlier)[::-1]),
        )

    async def take_fragments(
        self, conversation_id: int, after: Fragment, sender: str, window: float, limit: int
    ) -> list[Fragment]:
        return await db.run_db(self._take_fragments, conversation_id, after, sender, window, limit)

    def _take_fragments(self, conversation_id: int, after: Fragment, sender: str, window: float, limit: int):
        following = Message.objects.filter(conversation_id=conversation_id, id__gt=after.message_id).order_by("id")
        rows = following.values_list("id", "sender", "status", "content", "is_at_me", "received_at", "trace_id")
        taken, previous, gap = [], after.received_at, timezone.timedelta(seconds=window)
        for message_id, message_sender, status, *fragment in rows[:limit]:
            if message_sender != sender or status != Message.Status.RECEIVED or fragment[2] - previous > gap:
                break
            taken.append(Fragment(message_id, *fragment))
            previous = fragment[2]
        now = timezone.now()
        claimed = Message.objects.filter(pk__in=[f.message_id for f in taken], status=Message.Status.RECEIVED)
        claimed.update(status=Message.Status.PROCESSING, claimed_at=now, attempts=F("attempts") + 1)
        return taken

    async def release(self, message_id: int) -> None:
        await db.run_db(
            lambda: Message.objects.filter(pk=message_id, status=Message.Status.PROCESSING).update(
                status=Message.Status.RECEIVED
            )
        )

    async def insert_reply(self, reply: NewReply, joined: tuple[int, ...] = ()) -> Stored:
        return await db.run_db(self._insert_reply, reply, joined)

    def _insert_reply(self, reply: NewReply, joined: tuple[int, ...]) -> Stored:
        row = Reply(**{name: getattr(reply, name) for name in _REPLY_COLUMNS})
        try:
            with transaction.atomic():
                row.save(force_insert=True)
                now = timezone.now()
                Message.objects.filter(pk=reply.message_id).update(status=Message.Status.DECIDED, decided_at=now)
                Message.objects.filter(pk__in=joined).update(status=Message.Status.JOINED, decided_at=now)
        except IntegrityError:  # the message already has its reply
            row.pk = None
        others = Message.objects.filter(conversation_id=reply.conversation_id, status__in=UNDECIDED)
        return Stored(row.pk, others.exclude(pk__in=[*joined, reply.message_id]).exists())

    async def outbox(self, agent_id: str, limit: int, after_id: int = 0) -> list[OutboxReply]:
        rows = await db.run_db(
            lambda: list(
                Reply.objects.filter(agent_id=agent_id, status__in=OUTBOX, id__gt=after_id)
                .order_by("id")
                .values_list("id", "message_id", "conversation__chat_name", "content", "at", "created_at")[:limit]
            )
        )
        return [OutboxReply(*row) for row in rows]

    async def mark_sent(self, agent_id: str, reply_ids: list[int]) -> None:
        await db.run_db(
            lambda: Reply.objects.filter(agent_id=agent_id, id__in=reply_ids, status__in=OUTBOX).update(
                status=Reply.Status.SENT, pushed_at=timezone.now(), delivery_attempts=F("delivery_attempts") + 1
            )
        )

    async def ack(self, agent_id: str, reply_id: int, status: str, error: str) -> Acked | None:
        return await db.run_db(self._ack, agent_id, reply_id, status, error)

    def _ack(self, agent_id: str, reply_id: int, status: str, error: str) -> Acked | None:
        mine = Reply.objects.filter(pk=reply_id, agent_id=agent_id)
        if mine.filter(status__in=OUTBOX).update(status=status, acked_at=timezone.now(), delivery_error=error):
            trace_id = Message.objects.filter(reply__pk=reply_id).values_list("trace_id", flat=True).first()
            return Acked(status, True, trace_id)
        current = mine.values_list("status", flat=True).first()
        return Acked(current, False, None) if current is not None else None
