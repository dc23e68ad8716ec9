"""Personalities and the engines' admin pages: one default personality, seeded demo personalities,
supervisors' facts."""

import io

import pytest
from django.urls import reverse

from apps.engines import demo, manager
from apps.engines.models import ContactFact, Personality

from .factories import ConversationSummaryFactory, PersonalityFactory

pytestmark = pytest.mark.django_db


def test_demo_personalities_are_seeded_once_with_one_default():
    out = io.StringIO()
    demo.seed(out)
    demo.seed(out)
    assert Personality.objects.count() == len(demo.PERSONALITIES) == 3
    assert list(Personality.objects.filter(is_default=True).values_list("name", flat=True)) == ["充电桩客服小e"]
    assert "0 demo personalities created, 3 already there" in out.getvalue()
    assert all(isinstance(p.few_shot_examples, list) for p in Personality.objects.all())


PERSONALITY_FORM = {
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


def test_personality_admin_keeps_one_default(admin_client):
    first = PersonalityFactory(name="甲", is_default=True)
    assert admin_client.post(reverse("admin:engines_personality_add"), PERSONALITY_FORM).status_code == 302
    first.refresh_from_db()
    assert not first.is_default and Personality.objects.get(name="乙").is_default


def test_personality_admin_refuses_bad_examples_and_temperature(admin_client):
    bad = {**PERSONALITY_FORM, "name": "丙", "few_shot_examples": '[{"user": "缺回答"}]', "temperature": "5"}
    page = admin_client.post(reverse("admin:engines_personality_add"), bad).content.decode()
    assert "示例对话须为列表" in page and "温度须在 0 到 2 之间" in page
    assert not Personality.objects.exists()


def test_a_supervisors_fact_is_marked_as_theirs(admin_client):
    data = {"agent_id": "a", "chat_name": "张三", "contact": "张三", "fact": "客户住在渝北区", "source": "model"}
    assert admin_client.post(reverse("admin:engines_contactfact_add"), data).status_code == 302
    assert ContactFact.objects.get().source == ContactFact.Source.SUPERVISOR


def test_engine_admin_pages_render(admin_client):
    demo.seed(io.StringIO())
    ConversationSummaryFactory(conversation_id=1, summary="客户咨询安装。")
    manager.switch_engine("offline")
    for model in ("personality", "contactfact", "conversationsummary", "engineswitch"):
        response = admin_client.get(reverse(f"admin:engines_{model}_changelist"))
        assert response.status_code == 200, model
    personality = Personality.objects.get(is_default=True)
    response = admin_client.get(reverse("admin:engines_personality_change", args=[personality.pk]))
    assert response.status_code == 200 and "充电桩客服小e" in response.content.decode()
