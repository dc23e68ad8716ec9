"""The pipeline's seams with monitoring (metrics, traces, admin links) and knowledge (gaps)."""

import pytest
from prometheus_client import REGISTRY

from apps.knowledge.models import Gap
from apps.messages import services
from apps.messages.models import Conversation, Message, Reply
from apps.messages.tests.helpers import make_agent
from apps.messages.tests.test_services import store
from apps.monitoring import tracing
from apps.rules.models import Rule

pytestmark = pytest.mark.django_db(transaction=True)


def handoffs(kind: str) -> float:
    return REGISTRY.get_sample_value("wxcs_handoffs_total", {"reason": kind}) or 0.0


def decisions() -> float:
    return REGISTRY.get_sample_value("wxcs_decision_latency_seconds_count") or 0.0


def gap(question: str) -> Gap | None:
    return Gap.objects.filter(question=question).first()


def test_confident_reply_is_timed_and_is_no_gap(fake_engine):
    agent, _, _ = make_agent()
    before = decisions()
    mid = store(agent, "i-ok", content="充电桩怎么安装？")

    services.process(mid)

    assert decisions() == before + 1
    assert Reply.objects.get(message_id=mid).status == Reply.Status.QUEUED
    assert gap("充电桩怎么安装？") is None
    services.process(mid)  # a redelivered task decides nothing and observes nothing
    assert decisions() == before + 1


def test_low_confidence_hold_counts_a_handoff_and_records_a_knowledge_gap(fake_engine, settings):
    settings.REVIEW_CONFIDENCE_THRESHOLD = 0.6
    fake_engine.confidence = 0.3
    agent, _, _ = make_agent()
    before = handoffs("low_confidence")

    services.process(store(agent, "i-low", content="七千瓦的桩能给两辆车同时充吗"))

    assert handoffs("low_confidence") == before + 1
    recorded = gap("七千瓦的桩能给两辆车同时充吗")
    assert recorded is not None and recorded.count == 1 and recorded.reason == "low confidence 0.30"
    services.process(store(agent, "i-low-2", content="七千瓦的桩能给两辆车同时充吗"))  # asked again
    assert gap("七千瓦的桩能给两辆车同时充吗").count == 2


def test_engine_handoff_is_a_gap(fake_engine):
    fake_engine.handoff = True
    agent, _, _ = make_agent()
    before = handoffs("engine")

    services.process(store(agent, "i-eng", content="你们老板电话多少"))

    assert handoffs("engine") == before + 1
    assert gap("你们老板电话多少").reason.startswith("engine handoff")


def test_rule_handoff_is_a_gap_and_skips_the_engine(fake_engine):
    Rule.objects.create(name="投诉", priority=1, keywords="投诉", action="handoff", handoff_reason="客户投诉")
    agent, _, _ = make_agent()
    before = handoffs("rule")

    services.process(store(agent, "i-rule", content="我要投诉你们的安装师傅"))

    assert handoffs("rule") == before + 1
    assert gap("我要投诉你们的安装师傅").reason.startswith("handoff rule")
    assert fake_engine.calls == []


def test_taken_over_chat_counts_a_handoff_but_is_no_knowledge_gap(fake_engine):
    agent, _, _ = make_agent()
    first = store(agent, "i-take-1", content="你好")
    services.process(first)
    services.take_over(Message.objects.get(pk=first).conversation_id)
    before = handoffs("taken_over")

    services.process(store(agent, "i-take-2", content="充电桩坏了"))

    assert handoffs("taken_over") == before + 1
    assert gap("充电桩坏了") is None


def test_a_failing_gap_record_never_fails_the_decision(fake_engine, settings, monkeypatch):
    settings.REVIEW_CONFIDENCE_THRESHOLD = 0.6
    fake_engine.confidence = 0.2
    monkeypatch.setattr(services.knowledge, "record_gap", lambda question, reason: 1 / 0)
    agent, _, _ = make_agent()
    mid = store(agent, "i-gap-fail", content="能开发票吗")

    assert services.process(mid) == "decided"
    assert Reply.objects.get(message_id=mid).status == Reply.Status.PENDING_REVIEW


def test_retries_exhausted_count_a_handoff_once(fake_engine):
    agent, _, _ = make_agent()
    mid = store(agent, "i-fail")
    before = handoffs("failed")

    services.fail(mid, "engine timed out")
    services.fail(mid, "engine timed out")

    assert handoffs("failed") == before + 1


def test_decision_push_and_ack_are_in_the_message_trace(fake_engine):
    agent, _, _ = make_agent()
    mid = store(agent, "i-trace")
    services.process(mid)
    message = Message.objects.get(pk=mid)
    reply = Reply.objects.get(message_id=mid)

    services.ack(agent.id, reply.id, "delivered")

    lines = [event["message"] for event in tracing.events(message.trace_id.hex)]
    assert any(f"message {mid} decided" in line for line in lines), lines
    assert lines[-1] == f"reply {reply.id} delivered by the agent"
    services.ack(agent.id, reply.id, "delivered")  # a repeat changes nothing and logs nothing
    assert len(tracing.events(message.trace_id.hex)) == len(lines)


def test_admin_pages_link_to_the_traces(fake_engine, admin_client):
    agent, _, _ = make_agent()
    mid = store(agent, "i-admin")
    services.process(mid)
    message = Message.objects.get(pk=mid)
    conversation = Conversation.objects.get(pk=message.conversation_id)
    reply = Reply.objects.get(message_id=mid)

    page = admin_client.get(f"/admin/wxmessages/conversation/{conversation.pk}/change/").content.decode()
    assert f'href="/dashboard/conversations/{conversation.pk}/trace/"' in page
    page = admin_client.get(f"/admin/wxmessages/reply/{reply.pk}/change/").content.decode()
    assert f'href="/dashboard/traces/{message.trace_id.hex}/"' in page
    page = admin_client.get("/admin/wxmessages/message/").content.decode()
    assert f'href="/dashboard/traces/{message.trace_id.hex}/"' in page
    trace_page = admin_client.get(f"/dashboard/conversations/{conversation.pk}/trace/")
    assert trace_page.status_code == 200 and f"message {mid} decided" in trace_page.content.decode()
