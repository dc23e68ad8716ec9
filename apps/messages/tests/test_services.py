"""Decision, review, takeover, acks and stats (services called in-process; FakeEngine)."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from apps.messages import ingest, services
from apps.messages.models import Conversation, Message, Reply
from apps.messages.tests.helpers import make_agent
from conftest import requires_services

pytestmark = pytest.mark.django_db(transaction=True)


def store(agent, client_id, content="充电桩多少钱？", **extra):
    item = ingest.validate(
        {"id": client_id, "chat_name": extra.pop("chat_name", "王五"), "sender": "王五", "content": content, **extra}
    )
    assert not item.errors, item.errors
    return ingest.store(agent.id, [item])[0].message_id


def test_confident_reply_is_queued_with_provenance(fake_engine):
    agent, _, _ = make_agent()
    mid = store(agent, "s-1")
    assert services.process(mid) == "decided"
    reply = Reply.objects.get(message_id=mid)
    assert reply.status == "queued" and reply.action == "reply" and reply.content == fake_engine.content
    assert (reply.engine, reply.model, reply.input_tokens, reply.output_tokens) == ("fake", "fake-1", 12, 8)
    assert float(reply.cost) == pytest.approx(0.0012)
    assert set(reply.latency_ms) >= {"queue_wait", "rules", "retrieval", "llm", "total"}
    assert reply.latency_ms["llm"] == 3.0
    # a redelivered task is a no-op: still one reply, engine not called again
    assert services.process(mid) == "done"
    assert Reply.objects.filter(message_id=mid).count() == 1 and len(fake_engine.calls) == 1


def test_crash_after_reply_stored_is_finished_without_second_reply(fake_engine):
    agent, _, _ = make_agent()
    mid = store(agent, "s-crash")
    services.process(mid)
    Message.objects.filter(pk=mid).update(status="processing")  # as if the worker died before the update
    services.process(mid)
    assert Message.objects.get(pk=mid).status == "decided"
    assert Reply.objects.filter(message_id=mid).count() == 1 and len(fake_engine.calls) == 1


def test_older_messages_of_the_conversation_are_decided_first(fake_engine):
    agent, _, _ = make_agent()
    ids = [store(agent, f"o-{i}", content=f"问题{i}") for i in range(3)]
    services.process(ids[2])  # the newest task runs first
    assert [c["messages"][-1]["content"] for c in fake_engine.calls] == ["问题0", "问题1", "问题2"]
    assert fake_engine.calls[2]["messages"][0] == {"role": "user", "content": "问题0"}  # history
    assert fake_engine.calls[2]["messages"][1]["role"] == "assistant"


def test_low_confidence_and_handoff_wait_for_review(fake_engine, settings):
    settings.REVIEW_CONFIDENCE_THRESHOLD = 0.6
    agent, _, _ = make_agent()
    fake_engine.confidence = 0.3
    low = store(agent, "r-1")
    services.process(low)
    reply = Reply.objects.get(message_id=low)
    assert reply.status == "pending_review" and "low confidence" in reply.review_reason
    assert services.decision(reply, low)["action"] == "transfer_human"
    fake_engine.confidence, fake_engine.handoff = 0.95, True
    handoff = store(agent, "r-2")
    services.process(handoff)
    reply = Reply.objects.get(message_id=handoff)
    assert reply.status == "pending_review" and reply.action == "transfer_human"


def test_approve_edit_pushes_and_reject(fake_engine):
    agent, _, _ = make_agent()
    fake_engine.confidence = 0.2
    first, second = store(agent, "a-1"), store(agent, "a-2")
    services.process(second)
    r1, r2 = Reply.objects.get(message_id=first), Reply.objects.get(message_id=second)
    user = get_user_model().objects.create_user("sup", password="x", is_staff=True)
    assert services.approve(r1.id, user, content="人工修改后的回答")
    r1.refresh_from_db()
    assert (r1.status, r1.content, r1.source, r1.reviewed_by) == ("queued", "人工修改后的回答", "human", user)
    assert r1.draft == fake_engine.content
    assert not services.approve(r1.id, user)  # only from pending_review
    assert services.reject(r2.id, user)
    assert Reply.objects.get(pk=r2.id).status == "rejected"
    assert [f["reply_id"] for f in services.outbox(agent.id)] == [r1.id]


def test_taken_over_conversation_holds_replies(fake_engine):
    agent, _, _ = make_agent()
    mid = store(agent, "t-1")
    conversation = Message.objects.get(pk=mid).conversation
    services.take_over(conversation.id)
    services.process(mid)
    assert Reply.objects.get(message_id=mid).status == "pending_review"
    services.hand_back(conversation.id)
    mid2 = store(agent, "t-2")
    services.process(mid2)
    assert Reply.objects.get(message_id=mid2).status == "queued"
    assert services.agent_takeover(agent.id, conversation.chat_name, True)
    assert Conversation.objects.get(pk=conversation.id).taken_over


def test_group_message_without_at_is_ignored_with_at_is_answered_at_sender(fake_engine):
    agent, _, _ = make_agent()
    silent = store(agent, "g-1", chat_name="充电桩用户群", chat_type="group")
    services.process(silent)
    assert Reply.objects.get(message_id=silent).status == "skipped"
    asked = store(agent, "g-2", chat_name="充电桩用户群", chat_type="group", is_at_me=True)
    services.process(asked)
    reply = Reply.objects.get(message_id=asked)
    assert reply.status == "queued" and reply.at == "王五"
    assert len(fake_engine.calls) == 1


def test_engine_failure_after_retries_goes_to_a_human(fake_engine, settings):
    from apps.messages.tasks import process_message

    settings.PIPELINE_MAX_RETRIES = 0
    agent, _, _ = make_agent()
    fake_engine.error = RuntimeError("provider down")
    mid = store(agent, "f-1")
    assert process_message.apply(args=(mid,)).get() == "failed"
    reply = Reply.objects.get(message_id=mid)
    assert reply.status == "pending_review" and "provider down" in reply.review_reason
    assert Message.objects.get(pk=mid).status == "failed"


def test_ack_is_conditional(fake_engine):
    agent, _, _ = make_agent()
    other, _, _ = make_agent()
    mid = store(agent, "k-1")
    services.process(mid)
    reply = Reply.objects.get(message_id=mid)
    with pytest.raises(LookupError):
        services.ack(other.id, reply.id, "delivered")
    with pytest.raises(services.AckError):
        services.ack(agent.id, reply.id, "sent")
    assert services.ack(agent.id, reply.id, "delivered")["changed"]
    assert services.ack(agent.id, reply.id, "failed") == {"reply_id": reply.id, "status": "delivered", "changed": False}


def test_stats_are_real_numbers(fake_engine, client):
    agent, _, token = make_agent()
    for i in range(4):
        services.process(store(agent, f"st-{i}"))
    fake_engine.confidence = 0.1
    services.process(store(agent, "st-low"))
    Reply.objects.filter(latency_ms__total__isnull=False).update(latency_ms={"total": 10.0})
    Reply.objects.filter(pk=Reply.objects.order_by("id").first().pk).update(latency_ms={"total": 100.0})
    data = services.stats(7)
    today = data["per_day"][-1]
    assert today["date"] == timezone.localdate().isoformat()
    assert (today["messages"], today["replies"], today["handoffs"], today["pending_review"]) == (5, 4, 1, 1)
    assert today["p95_latency_ms"] == 100.0 and today["avg_latency_ms"] == pytest.approx(28.0)
    assert today["cost"] == pytest.approx(0.006)
    assert data["totals"]["messages"] == 5
    resp = client.get("/api/v1/stats?days=3", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert resp.status_code == 200 and resp.json()["agent_id"] == agent.id and len(resp.json()["per_day"]) == 3
    assert client.get("/api/v1/stats").status_code == 401
    assert client.get("/api/v1/stats?days=0", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 400
    staff = get_user_model().objects.create_user("boss", password="x", is_staff=True)
    client.force_login(staff)
    assert client.get("/api/v1/stats").json()["totals"]["messages"] == 5
    yesterday = timezone.now() - timedelta(days=1)
    Message.objects.update(received_at=yesterday)
    assert services.stats(2)["per_day"][0]["messages"] == 5


def test_sweeper_re_enqueues_only_stuck_messages(fake_engine, monkeypatch, settings):
    from apps.messages import queue

    settings.PIPELINE_SWEEP_AFTER = 60
    settings.PIPELINE_LOCK_TTL = 30
    enqueued = []
    monkeypatch.setattr(queue, "enqueue_messages", enqueued.extend)
    agent, _, _ = make_agent()
    fresh, old, orphan, done = (store(agent, f"sw-{i}") for i in range(4))
    long_ago = timezone.now() - timedelta(minutes=5)
    Message.objects.filter(pk=old).update(received_at=long_ago)
    Message.objects.filter(pk=orphan).update(status="processing", claimed_at=long_ago, received_at=long_ago)
    Message.objects.filter(pk=done).update(status="decided", received_at=long_ago)
    assert services.sweep_stuck() == [old, orphan]
    assert enqueued == [old, orphan]
    assert fresh not in enqueued


@requires_services  # concurrent decisions: the in-memory SQLite of the fallback takes one writer at a time
def test_a_batch_is_decided_together_and_what_cannot_be_decided_continues_alone(fake_engine, monkeypatch):
    """process_messages (an agent's frame): every message decided once; one whose chat is locked by another
    worker is re-enqueued alone (no retry counted), one whose engine fails is retried alone (attempt 1)."""
    from apps.messages import tasks

    agent, _, _ = make_agent()
    ok = [store(agent, f"b-{i}", chat_name=f"客户{i}") for i in range(3)]
    busy = store(agent, "b-busy", chat_name="忙碌的客户")
    failing = store(agent, "b-fail", chat_name="出错的客户", content="触发故障")
    conversation = {m.id: m.conversation_id for m in Message.objects.filter(pk__in=[*ok, busy, failing])}

    class FlakyEngine(type(fake_engine)):
        async def generate_response(self, messages, conversation_id, **kwargs):
            if messages[-1]["content"] == "触发故障":
                raise RuntimeError("provider down")
            return await super().generate_response(messages, conversation_id, **kwargs)

    flaky = FlakyEngine()

    async def resolve(conversation_id, personality_id, override):
        return flaky

    monkeypatch.setattr(services, "resolve_engine", resolve)
    retried = []
    monkeypatch.setattr(
        tasks.process_message, "apply_async", lambda args, kwargs, countdown: retried.append((args, kwargs, countdown))
    )
    with services.conversation_lock(conversation[busy]):  # another worker is deciding that chat
        result = tasks.process_messages.apply(args=([[mid, conversation[mid]] for mid in [*ok, busy, failing]],))
    assert result.get() == {"decided": 3, "retried": 2}
    assert Reply.objects.filter(message_id__in=ok).count() == 3 and len(flaky.calls) == 3
    assert not Reply.objects.filter(message_id__in=[busy, failing]).exists()
    by_message = {args[0]: (kwargs, countdown) for args, kwargs, countdown in retried}
    assert by_message[busy][0] == {"attempt": 0, "conversation_id": conversation[busy]}
    assert by_message[failing][0] == {"attempt": 1, "conversation_id": conversation[failing]}
    assert 0 < by_message[busy][1] < 0.2 and 0.4 < by_message[failing][1] <= 1.0


def test_a_frame_is_enqueued_as_batches_and_single_messages_alone(settings):
    """The wire form decodes to the tasks a worker runs: a batch of up to PIPELINE_ENQUEUE_BATCH messages
    as one process_messages task, a lone message as process_message."""
    import base64
    import json

    from apps.messages import queue

    settings.PIPELINE_ENQUEUE_BATCH = 2

    def decoded(raw):
        envelope = json.loads(raw)
        args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
        return envelope["headers"]["task"], args, kwargs

    assert [decoded(raw) for raw in queue.wire_messages([(1, 10), (2, 20), (3, 30)])] == [
        ("apps.messages.tasks.process_messages", [[[1, 10], [2, 20]]], {}),
        ("apps.messages.tasks.process_message", [3], {"conversation_id": 30}),
    ]
    settings.PIPELINE_ENQUEUE_BATCH = 1
    assert [decoded(raw)[0] for raw in queue.wire_messages([4, 5])] == ["apps.messages.tasks.process_message"] * 2


@requires_services
def test_a_decision_is_two_statements_on_postgresql(fake_engine, django_assert_num_queries):
    """Hot path pinned: one statement claims the message and reads its conversation and history, one
    stores the reply and marks the message decided (the agent's chat name rides along from the claim)."""
    agent, _, _ = make_agent()
    store(agent, "q-0", content="第一个问题")
    services.process(Message.objects.get(client_msg_id="q-0").id)
    mid = store(agent, "q-1", content="第二个问题")
    conversation_id = Message.objects.get(pk=mid).conversation_id
    with django_assert_num_queries(2):
        assert services.process(mid, conversation_id) == "decided"
    assert fake_engine.calls[-1]["messages"][:2] == [
        {"role": "user", "content": "第一个问题"},
        {"role": "assistant", "content": fake_engine.content},
    ]
