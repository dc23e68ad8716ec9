"""The offline engine: the knowledge base's best answer with its citation, or an apology handed to a
human; the same metrics as every engine."""

import pytest
from asgiref.sync import sync_to_async
from prometheus_client import REGISTRY

from apps.engines.offline import APOLOGY, OfflineEngine
from apps.knowledge.tests.factories import DocumentFactory, EntryFactory


def replies_counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("wxcs_engine_replies_total", {"engine": "offline", "outcome": outcome}) or 0


@pytest.mark.django_db(transaction=True)
async def test_offline_engine_answers_from_the_knowledge_base_with_a_citation():
    document = await sync_to_async(DocumentFactory)(title="充电桩故障手册", version="v2")
    entry = await sync_to_async(EntryFactory)(
        document=document,
        question="充电桩显示 E03 故障代码是什么意思",
        answer="E03 表示接地异常：请检查供电线路的接地线是否接好，仍报错请预约上门检测。",
        section="故障代码",
    )
    before = replies_counted("offline")

    reply = await OfflineEngine().generate_response(
        [{"role": "user", "content": "充电桩显示E03故障代码是什么意思", "name": "张三"}], 1
    )

    assert reply.content == entry.answer
    assert reply.offline and not reply.handoff
    assert reply.citations[0]["entry_id"] == entry.pk and reply.citations[0]["document"] == "充电桩故障手册"
    assert reply.confidence == reply.citations[0]["score"] > 0.3
    assert set(reply.latency_ms) >= {"retrieval", "total"}
    assert replies_counted("offline") == before + 1
    assert REGISTRY.get_sample_value("wxcs_engine_latency_seconds_count", {"engine": "offline", "stage": "total"})


@pytest.mark.django_db(transaction=True)
async def test_offline_engine_apologises_and_hands_off_without_a_good_answer():
    await sync_to_async(EntryFactory)(question="充电桩质保多久？", answer="整桩质保 3 年。")
    before = replies_counted("handoff")
    for question in ("今天天气怎么样", "", "？？？"):
        reply = await OfflineEngine().generate_response([{"role": "user", "content": question}], 1)
        assert reply.content == APOLOGY
        assert reply.handoff and reply.handoff_reason == "no answer"
        assert reply.offline and reply.confidence < 0.5 and reply.citations == []
    assert replies_counted("handoff") == before + 3
    assert (await OfflineEngine().health_check())["ok"]


@pytest.mark.django_db(transaction=True)
async def test_a_failing_knowledge_base_is_an_apology_not_an_error(monkeypatch):
    from apps.knowledge import services as knowledge

    async def broken(*args, **kwargs):
        raise RuntimeError("index unavailable")

    monkeypatch.setattr(knowledge, "search", broken)
    reply = await OfflineEngine().generate_response([{"role": "user", "content": "充电桩质保多久"}], 1)
    assert reply.content == APOLOGY and reply.handoff
