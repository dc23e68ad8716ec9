"""Switching engines in admin reaches a running Celery worker within a second, without a restart."""

import time
import uuid

import pytest
from django.core.cache import cache
from django.urls import reverse

from apps.engines import manager
from apps.engines.models import EngineSetting, EngineSwitch, Personality
from apps.engines.tasks import report_engine
from apps.llm_gateway.testing import fake_openai, use_fake_provider


@pytest.fixture(autouse=True)
def _fresh_manager():
    manager._state_cache.invalidate()
    manager._health.clear()
    yield
    manager._state_cache.invalidate()
    manager._health.clear()


@pytest.fixture
def server(settings):
    with fake_openai() as fake:
        use_fake_provider(fake, settings)
        yield fake


def ask_worker(conversation_id: int = 1, timeout: float = 10.0, **kwargs) -> dict:
    key = f"engines-test:report:{uuid.uuid4().hex}"
    report_engine.apply_async((key, conversation_id), kwargs, queue="default")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = cache.get(key)
        if report is not None:
            return report
        time.sleep(0.02)
    raise AssertionError("the worker did not answer")


@pytest.mark.e2e
def test_a_switch_in_admin_reaches_a_running_worker_within_a_second(live_env, tmp_path, server, admin_client):
    from apps.core.testing import running, start_worker

    worker = start_worker(live_env, tmp_path)
    with running(worker):
        response = admin_client.post(
            reverse("admin:engines_enginesetting_changelist"), {"scope": "global", "engine": "offline"}
        )
        assert response.status_code == 302
        assert ask_worker()["engine"] == "offline"
        pid = ask_worker()["pid"]

        response = admin_client.post(
            reverse("admin:engines_enginesetting_changelist"), {"scope": "global", "engine": "chat"}
        )
        assert response.status_code == 302
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

        # An unhealthy engine is refused with a clear message and nothing changes.
        server.fail("500")
        manager._health.clear()
        response = admin_client.post(
            reverse("admin:engines_enginesetting_changelist"), {"scope": "global", "engine": "mem0"}, follow=True
        )
        assert "健康检查未通过，未切换" in response.content.decode()
        time.sleep(1.0)
        assert ask_worker()["engine"] == "chat"
        assert EngineSetting.objects.get().active_engine == "chat"
        assert EngineSwitch.objects.filter(accepted=False, engine="mem0").exists()
    assert worker.popen.returncode is not None


@pytest.mark.django_db
def test_admin_lists_engines_with_info_and_health(admin_client, server, settings, tmp_path):
    settings.MEM0_DIR = tmp_path / "mem0"
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
    response = admin_client.post(
        reverse("admin:engines_enginesetting_changelist"), {"scope": "global", "engine": "chat"}, follow=True
    )
    assert "引擎“chat”健康检查未通过，未切换" in response.content.decode()
    assert not EngineSetting.objects.exists()
    switch = EngineSwitch.objects.get()
    assert switch.accepted is False and switch.user.username == "admin"


@pytest.mark.django_db
def test_admin_switch_form_reports_missing_fields(admin_client):
    response = admin_client.post(reverse("admin:engines_enginesetting_changelist"), {"scope": "chat", "engine": "chat"})
    assert response.status_code == 200
    assert "请填写会话 ID" in response.content.decode()
    assert not EngineSwitch.objects.exists()


@pytest.mark.django_db
def test_personality_admin_keeps_one_default(admin_client):
    first = Personality.objects.create(name="甲", system_prompt="甲", is_default=True)
    url = reverse("admin:engines_personality_add")
    data = {
        "name": "乙",
        "active": "on",
        "is_default": "on",
        "system_prompt": "乙",
        "tone": "",
        "route": "default",
        "temperature": "0.3",
        "max_reply_length": "200",
        "few_shot_examples": '[{"user": "在吗", "assistant": "在的"}]',
    }
    assert admin_client.post(url, data).status_code == 302
    first.refresh_from_db()
    assert not first.is_default and Personality.objects.get(name="乙").is_default
    bad = {**data, "name": "丙", "few_shot_examples": '[{"user": "缺回答"}]', "temperature": "5"}
    page = admin_client.post(url, bad).content.decode()
    assert "示例对话须为列表" in page and "温度须在 0 到 2 之间" in page


@pytest.mark.django_db
def test_engine_admin_pages_render(admin_client):
    from io import StringIO

    from apps.engines import demo
    from apps.engines.models import ContactFact, ConversationSummary

    demo.seed(StringIO())
    ContactFact.objects.create(agent_id="a", chat_name="张三", contact="张三", fact="客户住在渝北区")
    ConversationSummary.objects.create(conversation_id=1, summary="客户咨询安装。")
    manager.switch_engine("offline")
    for model in ("personality", "contactfact", "conversationsummary", "engineswitch"):
        response = admin_client.get(reverse(f"admin:engines_{model}_changelist"))
        assert response.status_code == 200, model
    personality = Personality.objects.get(is_default=True)
    response = admin_client.get(reverse("admin:engines_personality_change", args=[personality.pk]))
    assert response.status_code == 200 and "充电桩客服小e" in response.content.decode()
