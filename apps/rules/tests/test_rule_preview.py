"""The admin preview: which rule would decide a message and why, without counting or muting."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from apps.core import aio
from apps.rules import services
from apps.rules.models import ChatMute

from .factories import group_facts

pytestmark = pytest.mark.django_db(transaction=True)

PREVIEW = {
    "content": "我要转人工",
    "chat_name": "车友群",
    "chat_type": "group",
    "sender": "甲",
    "is_at_me": "on",
    "agent_id": "a1",
    "received_at": "2026-11-23T10:30",
}


@pytest.fixture
def staff(client, default_rules):
    client.force_login(get_user_model().objects.create_superuser("boss", password="pw-123456"))
    return client


def test_preview_shows_the_rule_and_why_without_side_effects(staff):
    url = reverse("admin:rules_rule_preview")
    assert staff.get(url).status_code == 200
    for _ in range(3):  # dry run: the per-user limit (1 / 30 s) is never consumed
        html = staff.post(url, PREVIEW).content.decode()
        assert 'id="decision-action"><strong>handoff' in html
        assert "客户要求人工" in html and "包含关键词" in html and "预览不计数" in html
    decision = aio.run(services.evaluate(group_facts("我要转人工", sender="甲")))
    assert decision.action == "handoff"
    assert staff.get(reverse("admin:rules_rule_changelist")).status_code == 200


def test_preview_of_an_admin_command_does_not_run_it(staff, settings):
    settings.RULES_ADMIN_NICKNAMES = ["店长"]
    html = staff.post(reverse("admin:rules_rule_preview"), {**PREVIEW, "content": "#mute", "sender": "店长"})
    assert "已静音" in html.content.decode() and "预览不执行" in html.content.decode()
    assert not ChatMute.objects.exists()


def test_preview_with_missing_fields_explains_and_decides_nothing(staff):
    html = staff.post(reverse("admin:rules_rule_preview"), {**PREVIEW, "content": "", "chat_type": "channel"})
    page = html.content.decode()
    assert html.status_code == 200 and 'id="decision-action"' not in page
    assert 'id="id_content_error"' in page and 'id="id_chat_type_error"' in page
