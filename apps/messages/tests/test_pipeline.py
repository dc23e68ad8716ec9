"""Deciding a message in-process (the worker's code, FakeEngine answering): what is stored, what is pushed,
in which order, and what happens on trouble."""

import asyncio
from contextlib import contextmanager
from datetime import timedelta

import pytest
from channels.layers import get_channel_layer
from django.utils import timezone
from prometheus_client import REGISTRY

from apps.core import aio, redis
from apps.knowledge.models import Gap
from apps.messages import outbox, pipeline, queue, tasks
from apps.messages.models import Conversation, Message, Reply
from apps.messages.tests.factories import ConversationFactory, MessageFactory
from apps.monitoring import tracing

pytestmark = pytest.mark.django_db(transaction=True)


def decide(message: Message) -> str:
    return aio.run(pipeline.process(message.id, message.conversation_id))


@contextmanager
def listening(group: str):
    """Collect what the channel layer delivers to `group` during the block."""
    layer = get_channel_layer()
    frames: list[dict] = []

    async def subscribe():
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        return channel

    channel = aio.run(subscribe())
    yield frames

    async def drain():
        try:
            while True:
                frames.append(await asyncio.wait_for(layer.receive(channel), 0.5))
        except TimeoutError:
            pass
        await layer.group_discard(group, channel)

    aio.run(drain())


def sample(name: str, labels: dict | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_a_confident_answer_is_stored_with_provenance_and_pushed_once(fake_engine):
    message = MessageFactory(content="充电桩多少钱？")
    with listening(outbox.agent_group(message.agent_id)) as pushed:
        assert decide(message) == "decided"
    reply = Reply.objects.get(message=message)
    assert (reply.status, reply.action, reply.source, reply.content) == (
        "sent",
        "reply",
        "engine",
        fake_engine.content,
    )
    assert reply.pushed_at and reply.delivery_attempts == 1
    assert (reply.engine, reply.model, reply.input_tokens, reply.output_tokens) == ("fake", "fake-1", 12, 8)
    assert float(reply.cost) == pytest.approx(0.0012)
    assert set(reply.latency_ms) >= {"queue_wait", "rules", "retrieval", "llm", "total"}
    assert reply.latency_ms["llm"] == 3.0 and reply.decision_ms is not None
    assert [event["frame"]["reply_id"] for event in pushed] == [reply.id]
    assert pushed[0]["frame"] == {
        "type": "reply",
        "reply_id": reply.id,
        "message_id": message.id,
        "chat": message.conversation.chat_name,
        "content": fake_engine.content,
        "at": None,
        "created_at": reply.created_at.isoformat(),
    }
    assert Message.objects.get(pk=message.pk).status == "decided"
    # deciding it again (a redelivered entry, the sweep) changes nothing and asks no engine
    assert decide(message) == "done"
    assert Reply.objects.filter(message=message).count() == 1 and len(fake_engine.calls) == 1


def test_earlier_messages_of_the_conversation_are_decided_first_with_their_history(fake_engine):
    conversation = ConversationFactory()
    messages = [MessageFactory(conversation=conversation, content=f"问题{i}") for i in range(3)]
    assert decide(messages[2]) == "decided"  # the newest arrives at the worker first
    assert [call["messages"][-1]["content"] for call in fake_engine.calls] == ["问题0", "问题1", "问题2"]
    history = fake_engine.calls[2]["messages"]
    assert history[0] == {"role": "user", "content": "问题0"} and history[1]["role"] == "assistant"
    assert decide(messages[0]) == "done" and decide(messages[1]) == "done"


def test_a_message_left_processing_by_a_dead_worker_is_decided_once(fake_engine):
    gone = timezone.now() - timedelta(hours=1)
    message = MessageFactory(status=Message.Status.PROCESSING, attempts=1, claimed_at=gone)
    assert decide(message) == "decided"
    assert Message.objects.get(pk=message.pk).attempts == 2
    assert Reply.objects.filter(message=message).count() == 1


def test_low_confidence_waits_for_review_and_is_a_knowledge_gap(fake_engine, settings):
    settings.REVIEW_CONFIDENCE_THRESHOLD = 0.6
    fake_engine.confidence = 0.3
    held_before = sample("wxcs_handoffs_total", {"reason": "low_confidence"})
    message = MessageFactory(content="你们支持哪种电缆？")
    with listening(outbox.agent_group(message.agent_id)) as pushed:
        decide(message)
    reply = Reply.objects.get(message=message)
    assert (reply.status, reply.review_reason) == ("pending_review", "low confidence 0.30")
    assert pushed == []  # nothing reaches the customer before a supervisor approves
    assert sample("wxcs_handoffs_total", {"reason": "low_confidence"}) == held_before + 1
    aio.run(aio.drain())
    assert Gap.objects.filter(question="你们支持哪种电缆？").exists()


def test_engine_handoff_is_a_transfer_to_a_human(fake_engine):
    fake_engine.handoff = True
    message = MessageFactory()
    decide(message)
    reply = Reply.objects.get(message=message)
    assert (reply.action, reply.status) == ("transfer_human", "pending_review")
    assert reply.review_reason.startswith("engine handoff:")


def test_a_handoff_rule_skips_the_engine(fake_engine):
    from apps.rules.tests.factories import RuleFactory

    RuleFactory(name="转人工", keywords="人工", action="handoff")
    message = MessageFactory(content="我要人工客服")
    decide(message)
    reply = Reply.objects.get(message=message)
    assert (reply.action, reply.status, reply.source) == ("transfer_human", "pending_review", "rule")
    assert fake_engine.calls == []


def test_a_taken_over_conversation_holds_replies_and_is_no_knowledge_gap(fake_engine):
    message = MessageFactory(conversation=ConversationFactory(taken_over=True), content="还在吗？")
    decide(message)
    reply = Reply.objects.get(message=message)
    assert (reply.status, reply.review_reason) == ("pending_review", "conversation taken over")
    aio.run(aio.drain())
    assert not Gap.objects.filter(question="还在吗？").exists()


def test_group_messages_need_an_at_and_the_reply_ats_the_sender(fake_engine):
    group = ConversationFactory(chat_type="group", chat_name="充电桩用户群")
    silent = MessageFactory(conversation=group, sender="李四", is_at_me=False)
    asked = MessageFactory(conversation=group, sender="李四", is_at_me=True)
    decide(asked)
    assert Reply.objects.get(message=silent).status == "skipped"
    assert Reply.objects.get(message=asked).at == "李四" and len(fake_engine.calls) == 1


def test_waiters_hear_of_the_decision_only_when_they_asked(fake_engine):
    waited, unwatched = MessageFactory(), MessageFactory()
    with listening(outbox.message_group(waited.id)) as told, listening(outbox.message_group(unwatched.id)) as quiet:
        aio.run(pipeline.handle(queue.Entry(waited.id, waited.conversation_id, announce=True)))
        aio.run(pipeline.handle(queue.Entry(unwatched.id, unwatched.conversation_id)))
    assert told == [{"type": "decision.ready", "message_id": waited.id}] and quiet == []


def test_an_engine_timeout_is_retried_as_a_task_then_handed_to_a_human(fake_engine, settings):
    settings.PIPELINE_MAX_RETRIES = 2
    fake_engine.error = pipeline.EngineTimeout("no answer")
    failed_before = sample("wxcs_handoffs_total", {"reason": "failed"})
    message = MessageFactory()
    result = tasks.process_message.apply((message.id, message.conversation_id)).get()
    assert result == "failed" and len(fake_engine.calls) == 3  # the first try and two retries
    reply = Reply.objects.get(message=message)
    assert (reply.status, reply.action, reply.content) == ("pending_review", "transfer_human", pipeline.APOLOGY)
    assert Message.objects.get(pk=message.pk).status == "failed"
    assert sample("wxcs_handoffs_total", {"reason": "failed"}) == failed_before + 1


def test_a_defect_fails_the_message_at_once_and_visibly(fake_engine):
    fake_engine.error = KeyError("a bug")
    message = MessageFactory()
    aio.run(pipeline.handle(queue.Entry(message.id, message.conversation_id)))
    assert len(fake_engine.calls) == 1  # not retried
    stored = Message.objects.get(pk=message.pk)
    assert stored.status == "failed" and "KeyError" in stored.error
    assert Reply.objects.get(message=message).review_reason.startswith("processing failed: KeyError")


def test_a_transient_error_in_the_queue_continues_as_the_retry_task(fake_engine, monkeypatch):
    sent = []
    monkeypatch.setattr(pipeline, "enqueue_task", lambda name, *args, **kwargs: sent.append((name, args, kwargs)))
    fake_engine.error = pipeline.EngineTimeout("no answer")
    message = MessageFactory()
    aio.run(pipeline.handle(queue.Entry(message.id, message.conversation_id)))
    assert sent == [
        (
            pipeline.RETRY_TASK,
            (message.id,),
            {"conversation_id": message.conversation_id, "attempt": 1, "countdown": 1.0},
        )
    ]
    assert not Reply.objects.filter(message=message).exists()
    assert Message.objects.get(pk=message.pk).status == "received"  # released for the retry to claim


def test_a_conversation_another_worker_is_deciding_is_left_to_it(fake_engine):
    conversation = ConversationFactory()
    first = MessageFactory(conversation=conversation, status=Message.Status.PROCESSING, claimed_at=timezone.now())
    second = MessageFactory(conversation=conversation)
    assert decide(second) == "done"  # the worker deciding `first` goes on to `second`
    assert fake_engine.calls == [] and not Reply.objects.filter(message__in=[first, second]).exists()
    assert Message.objects.get(pk=second.pk).status == "received"


def test_a_claim_older_than_the_claim_ttl_was_abandoned(fake_engine, settings):
    settings.PIPELINE_CLAIM_TTL = 60
    conversation = ConversationFactory()
    gone = timezone.now() - timedelta(seconds=61)
    first = MessageFactory(conversation=conversation, status=Message.Status.PROCESSING, claimed_at=gone, attempts=1)
    second = MessageFactory(conversation=conversation)
    assert decide(second) == "decided"
    assert [call["messages"][-1]["content"] for call in fake_engine.calls] == [first.content, second.content]
    assert Message.objects.get(pk=first.pk).attempts == 2


def test_concurrent_entries_of_one_conversation_are_decided_once_each_in_order(fake_engine):
    conversation = ConversationFactory()
    messages = [MessageFactory(conversation=conversation, content=f"第{i}问") for i in range(5)]

    async def together():
        return await asyncio.gather(*(pipeline.process(m.id, conversation.id) for m in reversed(messages)))

    assert sorted(aio.run(together())).count("decided") >= 1
    assert [call["messages"][-1]["content"] for call in fake_engine.calls] == [m.content for m in messages]
    decided = list(
        Message.objects.filter(conversation=conversation).order_by("id").values_list("decided_at", flat=True)
    )
    assert None not in decided and decided == sorted(decided)
    assert Reply.objects.filter(conversation=conversation).count() == 5


def test_decisions_and_acks_are_in_the_message_trace(fake_engine):
    message = MessageFactory()
    decide(message)
    reply = Reply.objects.get(message=message)
    aio.run(outbox.ack(message.agent_id, reply.id, "delivered"))
    lines = [event["message"] for event in tracing.events(message.trace_id)]
    assert any(f"message {message.id} decided" in line for line in lines)
    assert lines[-1] == f"reply {reply.id} delivered by the agent"
    aio.run(outbox.ack(message.agent_id, reply.id, "delivered"))  # a repeat changes nothing, logs nothing
    assert len(tracing.events(message.trace_id)) == len(lines)


def test_failing_a_message_twice_counts_one_handoff(fake_engine):
    message = MessageFactory()
    before = sample("wxcs_handoffs_total", {"reason": "failed"})
    pipeline.fail(message.id, "engine timed out")
    pipeline.fail(message.id, "engine timed out")
    assert sample("wxcs_handoffs_total", {"reason": "failed"}) == before + 1
    assert Reply.objects.filter(message=message).count() == 1


def test_the_sweep_queues_only_messages_nobody_is_deciding(settings):
    settings.PIPELINE_SWEEP_AFTER = 60
    old = timezone.now() - timedelta(minutes=5)
    stuck = MessageFactory(received_at=old)
    dead_worker = MessageFactory(received_at=old, status=Message.Status.PROCESSING, claimed_at=old)
    MessageFactory()  # fresh: its entry is still on its way
    MessageFactory(received_at=old, status=Message.Status.DECIDED)
    assert pipeline.sweep_stuck() == [stuck.id, dead_worker.id]
    entries = [queue.Entry.decode(raw.decode()) for raw in redis.client().lrange(queue.pending_key(), 0, -1)]
    assert [(e.message_id, e.conversation_id) for e in entries] == [
        (stuck.id, stuck.conversation_id),
        (dead_worker.id, dead_worker.conversation_id),
    ]


def test_the_consumer_decides_what_is_queued_at_most_n_at_a_time(fake_engine):
    messages = [MessageFactory() for _ in range(6)]
    running, most = 0, 0

    async def slow_handle(entry):
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        await pipeline.handle(entry)
        running -= 1

    async def consume():
        await redis.aclient().rpush(queue.pending_key(), "not an entry")  # junk is dropped, the rest decided
        await queue.enqueue([queue.Entry(m.id, m.conversation_id) for m in messages])
        consumer = queue.Consumer(slow_handle, concurrency=2)
        task = asyncio.get_running_loop().create_task(consumer.run())
        for _ in range(100):
            if await redis.aclient().llen(queue.pending_key()) == 0 and not consumer.running:
                break
            await asyncio.sleep(0.05)
        await consumer.stop(grace=5)
        await task

    aio.run(consume(), timeout=30)
    assert most == 2
    assert Reply.objects.filter(message__in=messages).count() == 6
    assert Conversation.objects.count() == 6


def test_fragments_within_the_debounce_are_one_question_and_a_later_one_is_not(fake_engine, settings):
    settings.PIPELINE_DEBOUNCE_MS = 400
    conversation = ConversationFactory()
    now = timezone.now()

    def message(text: str, seconds: float) -> Message:
        received = now + timedelta(seconds=seconds)
        return MessageFactory(conversation=conversation, sender="张三", content=text, received_at=received)

    first, second, third = message("你好", 0), message("充电桩", 0.2), message("多少钱？", 0.5)
    late = message("在吗", 1.5)  # 1 s after the one before: a question of its own
    started = timezone.now()
    assert decide(first) == "decided"
    assert (timezone.now() - started).total_seconds() >= 0.4  # waited for the window after the newest
    reply = Reply.objects.get(message__conversation=conversation, message=third)
    assert fake_engine.calls[0]["messages"][-1] == {"role": "user", "content": "你好\n充电桩\n多少钱？"}
    statuses = dict(Message.objects.filter(conversation=conversation).values_list("id", "status"))
    assert statuses == {first.id: "joined", second.id: "joined", third.id: "decided", late.id: "decided"}
    assert Reply.objects.filter(message__conversation=conversation).count() == 2 and reply.status == "sent"
    assert reply.latency_ms["queue_wait"] >= 900  # from the first fragment, the debounce included
    assert fake_engine.calls[1]["messages"][-1] == {"role": "user", "content": "在吗"}
