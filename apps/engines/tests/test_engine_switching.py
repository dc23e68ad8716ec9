"""Which engine answers: override → personality → global → offline; switching in admin without a
restart, refused for an unknown or unhealthy engine; test engines registered like the built-in ones."""

import time
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.urls import reverse

from apps.core import jobs, redis
from apps.engines import manager
from apps.engines.models import EngineSetting, EngineSwitch, Personality
from apps.engines.offline import OfflineEngine
from apps.messages.tests.factories import ConversationFactory

from .factories import PersonalityFactory


class ChatLike(OfflineEngine):
    name = "chat"


class Mem0Like(OfflineEngine):
    name = "mem0"


@pytest.fixture
def light_engines(monkeypatch):
    """chat and mem0 registered as engines that need no model, so resolution is tested on its own."""
    monkeypatch.setattr(manager, "_factories", dict(manager._factories))
    monkeypatch.setattr(manager, "_instances", {})
    manager.register_engine("chat", ChatLike)
    manager.register_engine("mem0", Mem0Like)


@pytest.mark.django_db(transaction=True)
async def test_resolve_follows_override_then_personality_then_global(light_engines, settings):
    settings.ENGINE_DEFAULT = "offline"
    assert (await manager.resolve_engine(1)).name == "offline"
    personality = await sync_to_async(PersonalityFactory)(engine="mem0")
    await sync_to_async(manager.switch_engine)("chat")
    assert (await manager.resolve_engine(1)).name == "chat"
    assert (await manager.resolve_engine(1, personality_id=personality.pk)).name == "mem0"
    assert (await manager.resolve_engine(1, personality_id=personality.pk, override="offline")).name == "offline"


@pytest.mark.django_db(transaction=True)
async def test_an_unregistered_engine_name_falls_back_to_the_next_one(light_engines):
    """An engine removed from the code (or a typo in the database) never stops replies."""
    await EngineSetting.objects.acreate(pk=1, active_engine="retired")
    personality = await sync_to_async(PersonalityFactory)(engine="chat")
    assert (await manager.resolve_engine(1)).name == "offline"
    assert (await manager.resolve_engine(1, override="gone", personality_id=personality.pk)).name == "chat"
    assert (await manager.resolve_engine(1, override="gone")).name == "offline"


@pytest.mark.django_db(transaction=True)
def test_a_test_engine_is_registered_and_selected_through_the_normal_switch(admin_client, light_engines):
    from apps.engines.testing import EchoEngine

    manager.register_engine("echo", EchoEngine)  # what importing apps.engines.testing does
    page = admin_client.get(reverse("admin:engines_enginesetting_changelist")).content.decode()
    assert 'value="echo"' in page and "engine-echo" in page

    response = admin_client.post(
        reverse("admin:engines_enginesetting_changelist"), {"scope": "global", "engine": "echo"}
    )
    assert response.status_code == 302
    engine = manager.get_engine(EngineSetting.objects.get().active_engine)
    assert isinstance(engine, EchoEngine)
    conversation = ConversationFactory()
    manager.switch_engine("offline", conversation_id=conversation.pk)
    conversation.refresh_from_db()
    assert conversation.engine_override == "offline"


@pytest.mark.django_db(transaction=True)
def test_switch_refuses_unknown_engine_and_records_it(admin_client):
    with pytest.raises(manager.SwitchRefused, match="没有名为"):
        manager.switch_engine("gpt-magic")
    assert EngineSwitch.objects.get().accepted is False
    assert not EngineSetting.objects.exists()
    # The admin form offers registered engines only.
    response = admin_client.post(
        reverse("admin:engines_enginesetting_changelist"), {"scope": "global", "engine": "gpt-magic"}
    )
    assert response.status_code == 200 and "gpt-magic" in response.content.decode()
    assert EngineSwitch.objects.count() == 1 and not EngineSetting.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_switch_for_a_missing_personality_or_chat_is_refused():
    with pytest.raises(manager.SwitchRefused, match="人设 #999 不存在"):
        manager.switch_engine("offline", personality_id=999)
    with pytest.raises(manager.SwitchRefused, match="会话 #999 不存在"):
        manager.switch_engine("offline", conversation_id=999)
    with pytest.raises(manager.SwitchRefused, match="全局引擎不能为空"):
        manager.switch_engine("")
    assert list(EngineSwitch.objects.values_list("accepted", flat=True)) == [False, False, False]


@pytest.mark.django_db(transaction=True)
def test_a_switch_publishes_a_new_version_for_the_other_processes():
    key = manager.SWITCH.version_key
    before = redis.client().get(key)
    manager.switch_engine("offline")
    assert EngineSetting.objects.get().active_engine == "offline"
    assert redis.client().get(key) not in (None, before)


@pytest.mark.django_db(transaction=True)
async def test_resolve_reads_the_database_only_after_a_switch(monkeypatch, settings):
    loads = []
    real_load = manager.SWITCH._load
    monkeypatch.setattr(manager.SWITCH, "_load", lambda version: loads.append(version) or real_load(version))
    settings.ENGINE_SWITCH_CHECK_SECONDS = 0
    for _ in range(50):
        await manager.resolve_engine(1)
    assert len(loads) == 1
    redis.client().set(manager.SWITCH.version_key, "another process switched")
    await manager.resolve_engine(1)
    assert len(loads) == 2


def ask_worker(conversation_id: int = 1, timeout: float = 10.0, **kwargs) -> dict:
    key = f"engines-test:report:{uuid.uuid4().hex}"
    jobs.enqueue("engines.report_engine", key, conversation_id, **kwargs)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = cache.get(key)
        if report is not None:
            return report
        time.sleep(0.02)
    raise AssertionError("the worker did not answer")


def switch_in_admin(admin_client, engine: str, **extra):
    url = reverse("admin:engines_enginesetting_changelist")
    return admin_client.post(url, {"scope": "global", "engine": engine}, **extra)


@pytest.mark.e2e
def test_a_switch_in_admin_reaches_a_running_worker_within_a_second(live_env, tmp_path, server, admin_client):
    from apps.core.testing import running, start_worker

    worker = start_worker(live_env, tmp_path)
    with running(worker):
        assert switch_in_admin(admin_client, "offline").status_code == 302
        assert ask_worker()["engine"] == "offline"
        pid = ask_worker()["pid"]

        assert switch_in_admin(admin_client, "chat").status_code == 302
        switched_at = time.monotonic()
        seen = None
        while seen != "chat":
            report = ask_worker()
            seen = report["engine"]
            assert time.monotonic() - switched_at < 1.5, "the worker still resolves the old engine"
        assert report["pid"] == pid  # the same process: no restart
        time.sleep(max(0.0, 1.0 - (time.monotonic() - switched_at)))
        assert ask_worker()["engine"] == "chat"

        # Per personality and per chat overrides take precedence, and reach the worker too.
        personality = Personality.objects.create(name="售后", system_prompt="你是售后工程师。")
        manager.switch_engine("offline", personality_id=personality.pk)
        time.sleep(1.0)
        assert ask_worker(personality_id=personality.pk)["engine"] == "offline"
        assert ask_worker()["engine"] == "chat"
        assert ask_worker(personality_id=personality.pk, override="chat")["engine"] == "chat"
        # The test engine is registered in the worker (--include apps.engines.testing).
        assert ask_worker(override="echo")["engine"] == "echo"

        # An unhealthy engine is refused with a clear message and nothing changes.
        server.fail("500")
        manager._health.clear()
        response = switch_in_admin(admin_client, "mem0", follow=True)
        assert "健康检查未通过，未切换" in response.content.decode()
        time.sleep(1.0)
        assert ask_worker()["engine"] == "chat"
        assert EngineSetting.objects.get().active_engine == "chat"
        assert EngineSwitch.objects.filter(accepted=False, engine="mem0").exists()
    assert worker.popen.returncode is not None


@pytest.mark.django_db
def test_admin_lists_engines_with_info_and_health(admin_client, server):
    response = admin_client.get(reverse("admin:engines_enginesetting_changelist"))
    page = response.content.decode()
    assert response.status_code == 200
    for name in ("offline", "chat", "mem0"):
        assert f"engine-{name}" in page
    assert "离线应答（知识库）" in page and "对话引擎（ChatEngine）" in page and "记忆引擎（Mem0Engine）" in page
    assert "mem0ai 2.2.1" in page
    assert "fake-model 正常" in page  # chat's health check went through the gateway to the loopback model
    assert "异常" not in page


@pytest.mark.django_db
def test_admin_refuses_an_unhealthy_engine_and_records_it(admin_client, server):
    server.fail("500")
    response = switch_in_admin(admin_client, "chat", follow=True)
    assert "引擎“chat”健康检查未通过，未切换" in response.content.decode()
    assert not EngineSetting.objects.exists()
    switch = EngineSwitch.objects.get()
    assert switch.accepted is False and switch.user.username == "admin"


@pytest.mark.django_db
def test_admin_switch_form_reports_missing_fields(admin_client):
    url = reverse("admin:engines_enginesetting_changelist")
    response = admin_client.post(url, {"scope": "chat", "engine": "chat"})
    assert response.status_code == 200
    assert "请填写会话 ID" in response.content.decode()
    assert "全局引擎不能为空" in admin_client.post(url, {"scope": "global", "engine": ""}).content.decode()
    assert not EngineSwitch.objects.exists()
