"""Both stores (PostgreSQL statements, the ORM of the embedded default) keep the same contract: run against the
same database, they must be indistinguishable."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.core import aio, db
from apps.messages.models import Conversation, Message, Reply
from apps.messages.store import Fragment, NewReply, OrmStore, PostgresStore, Stored
from apps.messages.tests.factories import ConversationFactory, MessageFactory, ReplyFactory
from apps.messages.validation import validate

pytestmark = pytest.mark.django_db(transaction=True)

STORES = [pytest.param(OrmStore, id="orm"), pytest.param(PostgresStore, id="postgres")]


@pytest.fixture(params=STORES)
def store(request):
    if request.param is PostgresStore and not db.is_postgres():
        pytest.skip("the PostgreSQL store needs PostgreSQL")
    return request.param()


def item(client_id: str, chat: str = "张三", **extra):
    return validate({"id": client_id, "chat_name": chat, "sender": chat, "content": f"问题 {client_id}", **extra})


def test_insert_is_idempotent_per_agent_and_client_id(store):
    agent = ConversationFactory().agent
    first = aio.run(store.insert_messages(agent.id, [item("a"), item("b", chat="李四")]))
    again = aio.run(store.insert_messages(agent.id, [item("b", chat="李四"), item("c")]))
    assert [(a.client_id, a.created) for a in first + again] == [("a", True), ("b", True), ("b", False), ("c", True)]
    assert again[0].message_id == first[1].message_id and again[0].conversation_id == first[1].conversation_id
    assert first[0].conversation_id == again[1].conversation_id  # one conversation per agent + chat
    stored = Message.objects.get(pk=first[0].message_id)
    assert (stored.status, stored.content, stored.sender, stored.trace_id is not None) == (
        "received",
        "问题 a",
        "张三",
        True,
    )
    assert Conversation.objects.filter(agent=agent, chat_name__in=["张三", "李四"]).count() == 2


def test_claim_takes_the_oldest_undecided_unless_someone_is_deciding_it(store):
    conversation = ConversationFactory()
    old = MessageFactory(conversation=conversation, content="第一问", status="decided")
    ReplyFactory(message=old, content="第一答", status="delivered")
    first, second = MessageFactory(conversation=conversation), MessageFactory(conversation=conversation)
    long_ago, now = timezone.now() - timedelta(minutes=5), timezone.now()
    claimed = aio.run(store.claim(conversation.id, 10, long_ago))
    assert claimed.message_id == first.id and claimed.attempts == 1 and claimed.chat_name == conversation.chat_name
    assert [(t.content, t.reply, t.status) for t in claimed.earlier] == [("第一问", "第一答", "delivered")]
    assert Message.objects.get(pk=first.pk).status == "processing"
    assert aio.run(store.claim(conversation.id, 10, long_ago)) is None  # being decided: the chat waits
    assert aio.run(store.claim(conversation.id, 10, timezone.now())).attempts == 2  # its worker gave up
    aio.run(store.release(first.id))  # the decision failed: claimable again at once
    assert aio.run(store.claim(conversation.id, 10, long_ago)).attempts == 3
    Message.objects.filter(pk=first.pk).update(status="decided")
    assert aio.run(store.claim(conversation.id, 10, now)).message_id == second.id
    assert aio.run(store.claim(ConversationFactory().id, 10, now)) is None  # nothing undecided


def test_fragments_are_the_senders_run_of_messages_within_the_window(store):
    conversation = ConversationFactory()
    start = timezone.now() - timedelta(minutes=1)

    def message(seconds, sender="张三", **extra):
        return MessageFactory(
            conversation=conversation, sender=sender, received_at=start + timedelta(seconds=seconds), **extra
        )

    first = message(0, status="processing")
    second, third = message(1, content="第二段"), message(2.5, is_at_me=True)
    late = message(6)  # 3.5 s after the one before: a question of its own
    claimed = aio.run(store.claim(conversation.id, 10, start - timedelta(minutes=5)))
    assert claimed is None  # the first is being decided: by whoever takes its fragments
    after = Fragment(first.id, first.content, False, first.received_at, first.trace_id)
    taken = aio.run(store.take_fragments(conversation.id, after, "张三", 2.0, 20))
    assert [(f.message_id, f.is_at_me) for f in taken] == [(second.id, False), (third.id, True)]
    assert taken[0].content == "第二段" and taken[1].trace_id == third.trace_id
    assert set(Message.objects.filter(pk__in=[second.pk, third.pk]).values_list("status", flat=True)) == {"processing"}
    assert aio.run(store.take_fragments(conversation.id, taken[-1], "张三", 2.0, 20)) == []  # `late` is not one
    assert Message.objects.get(pk=late.pk).status == "received"
    after_late = Fragment(late.id, late.content, False, late.received_at, late.trace_id)
    message(6.5, sender="李四")  # someone else spoke in between (a group): the run ends there
    message(7)
    assert aio.run(store.take_fragments(conversation.id, after_late, "张三", 2.0, 20)) == []
    assert len(aio.run(store.take_fragments(conversation.id, after, "张三", 9.0, 1))) == 0  # taken already: none


def test_a_reply_to_joined_fragments_marks_them_joined(store):
    conversation = ConversationFactory()
    first, last = (MessageFactory(conversation=conversation, status="processing") for _ in range(2))
    waiting = MessageFactory(conversation=conversation)
    now = timezone.now()
    reply = NewReply(
        message_id=last.id,
        conversation_id=conversation.id,
        agent_id=last.agent_id,
        action="reply",
        status="sent",
        source="engine",
        content="一个回答",
        draft="一个回答",
        confidence=0.8,
        review_reason="",
        at="",
        latency_ms={"total": 1.0},
        decision_ms=1.0,
        created_at=now,
    )
    stored = aio.run(store.insert_reply(reply, (first.id,)))
    assert stored.stored and stored.more is True  # `waiting` is undecided; the fragments are not
    statuses = dict(Message.objects.filter(conversation=conversation).values_list("id", "status"))
    assert statuses == {first.id: "joined", last.id: "decided", waiting.id: "received"}
    assert Reply.objects.filter(message__conversation=conversation).count() == 1


def test_a_message_gets_one_reply(store):
    message = MessageFactory(status="processing")
    now = timezone.now()

    def reply(text):
        return NewReply(
            message_id=message.id,
            conversation_id=message.conversation_id,
            agent_id=message.agent_id,
            action="reply",
            status="sent",
            source="engine",
            content=text,
            draft=text,
            confidence=0.8,
            review_reason="",
            at="",
            latency_ms={"total": 1.0},
            decision_ms=1.0,
            created_at=now,
            pushed_at=now,
            delivery_attempts=1,
            cost=Decimal("0.0012"),
            citations=[{"entry_id": 3, "title": "安装"}],
        )

    first = aio.run(store.insert_reply(reply("先到")))
    assert first.stored and first.more is False
    assert aio.run(store.insert_reply(reply("后到"))) == Stored(reply_id=None, more=False)
    stored = Reply.objects.get(message=message)
    assert (stored.id, stored.content, stored.status, stored.delivery_attempts) == (first.reply_id, "先到", "sent", 1)
    assert stored.citations == [{"entry_id": 3, "title": "安装"}] and stored.cost == Decimal("0.0012")
    assert (stored.reviewed_by, stored.acked_at, stored.delivery_error) == (None, None, "")
    MessageFactory(conversation=message.conversation)  # another one waits in the chat
    assert aio.run(store.insert_reply(reply("再来"))).more is True
    assert Message.objects.get(pk=message.pk).status == "decided"


def test_outbox_mark_sent_and_ack_are_per_agent(store):
    mine = [ReplyFactory() for _ in range(2)]
    agent = mine[0].agent
    Reply.objects.filter(pk=mine[1].pk).update(agent=agent, conversation=mine[0].conversation)
    other = ReplyFactory()
    ReplyFactory(message=MessageFactory(conversation=mine[0].conversation), status="pending_review")
    listed = aio.run(store.outbox(agent.id, 10))
    assert [r.reply_id for r in listed] == [mine[0].id, mine[1].id] and listed[0].chat == mine[0].conversation.chat_name
    assert [r.reply_id for r in aio.run(store.outbox(agent.id, 1))] == [mine[0].id]
    aio.run(store.mark_sent(agent.id, [mine[0].id, other.id]))
    assert Reply.objects.get(pk=mine[0].pk).status == "sent" and Reply.objects.get(pk=other.pk).status == "queued"
    acked = aio.run(store.ack(agent.id, mine[0].id, "delivered", ""))
    assert (acked.status, acked.changed, acked.trace_id) == ("delivered", True, mine[0].message.trace_id)
    repeat = aio.run(store.ack(agent.id, mine[0].id, "failed", "later"))
    assert (repeat.status, repeat.changed) == ("delivered", False)
    assert aio.run(store.ack(agent.id, other.id, "delivered", "")) is None
    assert Reply.objects.get(pk=other.pk).status == "queued"


def test_the_postgresql_reply_insert_covers_every_column():
    from dataclasses import fields

    from apps.messages.store import UNTOUCHED_REPLY_COLUMNS

    columns = {f.attname for f in Reply._meta.concrete_fields if not f.primary_key}
    assert {f.name for f in fields(NewReply)} | set(UNTOUCHED_REPLY_COLUMNS) == columns
