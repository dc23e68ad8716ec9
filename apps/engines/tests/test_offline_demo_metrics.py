import io

import pytest
from prometheus_client import REGISTRY

from apps.engines import demo
from apps.engines.mem0_engine import Mem0Engine
from apps.engines.models import Personality
from apps.engines.offline import OfflineEngine
from apps.llm_gateway.testing import fake_openai, use_fake_provider


@pytest.mark.django_db(transaction=True)
async def test_offline_engine_answers_from_the_knowledge_base_with_a_citation():
    from apps.knowledge.models import Document, Entry

    document = await Document.objects.acreate(title="充电桩故障手册", version="v2")
    entry = await Entry.objects.acreate(
        document=document,
        question="充电桩显示 E03 故障代码是什么意思",
        answer="E03 表示接地异常：请检查供电线路的接地线是否接好，仍报错请预约上门检测。",
        section="故障代码",
    )
    before = REGISTRY.get_sample_value("wxcs_engine_replies_total", {"engine": "offline", "outcome": "offline"}) or 0

    reply = await OfflineEngine().generate_response(
        [{"role": "user", "content": "充电桩显示E03故障代码是什么意思", "name": "张三"}], 1
    )

    assert reply.content == entry.answer
    assert reply.offline and not reply.handoff
    assert reply.citations[0]["entry_id"] == entry.pk and reply.citations[0]["document"] == "充电桩故障手册"
    assert reply.confidence == reply.citations[0]["score"] > 0.3
    assert set(reply.latency_ms) >= {"retrieval", "total"}
    after = REGISTRY.get_sample_value("wxcs_engine_replies_total", {"engine": "offline", "outcome": "offline"})
    assert after == before + 1
    assert REGISTRY.get_sample_value("wxcs_engine_latency_seconds_count", {"engine": "offline", "stage": "total"})


@pytest.mark.django_db
def test_demo_personalities_are_seeded_once_with_one_default():
    out = io.StringIO()
    demo.seed(out)
    demo.seed(out)
    assert Personality.objects.count() == len(demo.PERSONALITIES) == 3
    assert list(Personality.objects.filter(is_default=True).values_list("name", flat=True)) == ["充电桩客服小e"]
    assert "0 demo personalities created, 3 already there" in out.getvalue()
    assert all(isinstance(p.few_shot_examples, list) for p in Personality.objects.all())


@pytest.mark.django_db(transaction=True)
async def test_mem0_health_check_tells_a_store_held_by_another_process_from_a_broken_one(settings, tmp_path):
    settings.MEM0_DIR = tmp_path / "mem0"
    with fake_openai() as server:
        use_fake_provider(server, settings)
        holder, checker = Mem0Engine(), Mem0Engine()
        assert (await checker.health_check())["ok"]  # opens the store for the check and releases it
        await holder.search_memories("someone", "你好")  # the "worker" holds the local store now
        health = await checker.health_check()
        assert health["ok"] and "正由另一个进程" in health["detail"]
        assert await holder.search_memories("someone", "你好") == []

        server.fail("500", path="any")
        health = await Mem0Engine().health_check()
        assert not health["ok"]
