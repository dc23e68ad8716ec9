import pytest
from django.core.cache import cache

from apps.engines import manager
from apps.engines.models import EngineSetting, EngineSwitch, Personality
from apps.engines.offline import APOLOGY, OfflineEngine


class NamedEngine(OfflineEngine):
    """An engine class the manager can load under any name, so resolution is tested on its own."""


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    monkeypatch.setitem(manager.ENGINE_CLASSES, "chat", f"{__name__}.ChatLike")
    monkeypatch.setitem(manager.ENGINE_CLASSES, "mem0", f"{__name__}.Mem0Like")
    monkeypatch.setattr(manager, "_instances", {})
    manager._state_cache.invalidate()
    yield
    manager._state_cache.invalidate()


class ChatLike(NamedEngine):
    name = "chat"


class Mem0Like(NamedEngine):
    name = "mem0"


@pytest.mark.django_db(transaction=True)
async def test_resolve_follows_global_then_personality_then_override(settings):
    settings.ENGINE_DEFAULT = "offline"
    assert (await manager.resolve_engine(1)).name == "offline"
    await EngineSetting.objects.acreate(pk=1, active_engine="chat")
    personality = await Personality.objects.acreate(name="p", system_prompt="s", engine="mem0")
    manager._state_cache.invalidate()
    assert (await manager.resolve_engine(1)).name == "chat"
    assert (await manager.resolve_engine(1, personality_id=personality.pk)).name == "mem0"
    assert (await manager.resolve_engine(1, personality_id=personality.pk, override="offline")).name == "offline"


@pytest.mark.django_db(transaction=True)
def test_switch_refuses_unknown_engine_and_records_it():
    with pytest.raises(manager.SwitchRefused, match="没有名为"):
        manager.switch_engine("gpt-magic")
    assert EngineSwitch.objects.get().accepted is False
    assert not EngineSetting.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_switch_bumps_version_key_and_other_processes_reload():
    before = cache.get(manager.VERSION_KEY)
    manager.switch_engine("offline")
    assert EngineSetting.objects.get().active_engine == "offline"
    assert cache.get(manager.VERSION_KEY) not in (None, before)


@pytest.mark.django_db(transaction=True)
async def test_resolve_reads_the_database_only_after_a_switch(monkeypatch, settings):
    loads = []
    real_load = manager.load_state
    monkeypatch.setattr(manager, "load_state", lambda: loads.append(1) or real_load())
    settings.ENGINE_SWITCH_CHECK_SECONDS = 0
    for _ in range(50):
        await manager.resolve_engine(1)
    assert len(loads) == 1
    cache.set(manager.VERSION_KEY, "another process switched")
    await manager.resolve_engine(1)
    assert len(loads) == 2


@pytest.mark.django_db
async def test_offline_engine_apologises_and_hands_off_without_knowledge(monkeypatch):
    async def no_hits(query, k):
        return []

    monkeypatch.setattr("apps.engines.adapters.knowledge_search", no_hits)
    reply = await OfflineEngine().generate_response([{"role": "user", "content": "充电桩坏了"}], 1)
    assert reply.content == APOLOGY
    assert reply.handoff and reply.handoff_reason == "no answer"
    assert reply.offline and reply.confidence < 0.5
    assert (await OfflineEngine().health_check())["ok"]
