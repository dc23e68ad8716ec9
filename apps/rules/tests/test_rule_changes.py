"""A change to the rules reaches every process: at once in the one that made it, through the Redis
version in the others (checked at most once per RULES_VERSION_CHECK_MS)."""

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.urls import reverse

from apps.core import redis
from apps.rules import services
from apps.rules.models import Rule

from .factories import MessageFactsFactory, RuleFactory

pytestmark = pytest.mark.django_db(transaction=True)


async def test_changes_are_seen_here_at_once_and_elsewhere_through_the_redis_version(settings):
    settings.RULES_VERSION_CHECK_MS = 60_000
    facts = MessageFactsFactory(content="有人吗")
    assert (await services.evaluate(facts)).action == "none"
    await services.RULES.get()
    rule = await Rule.objects.acreate(name="新规则", keywords="有人", action="reply", reply_templates="有的")
    # Written behind the services' back (think: another process): not seen until its version arrives.
    assert (await services.evaluate(facts)).action == "none"

    redis.client().set(services.RULES.version_key, "another process")
    assert (await services.evaluate(facts)).action == "none"  # checked at most once per interval
    settings.RULES_VERSION_CHECK_MS = 0
    assert (await services.evaluate(facts)).reply == "有的"

    settings.RULES_VERSION_CHECK_MS = 60_000
    rule.reply_templates = "改过了"
    await sync_to_async(services.save_rule_config)(
        rule
    )  # through the service: this process at once, whatever the interval
    assert (await services.evaluate(facts)).reply == "改过了"


@pytest.fixture
def admin_client_logged_in(client, transactional_db):
    client.force_login(get_user_model().objects.create_superuser("boss", password="pw-123456"))
    return client


def evaluate(content: str):
    from apps.core import aio

    return aio.run(services.evaluate(MessageFactsFactory(content=content)))


def test_admin_edits_and_deletes_apply_to_the_next_message(admin_client_logged_in, settings):
    settings.RULES_VERSION_CHECK_MS = 60_000
    rule = RuleFactory(name="发票", keywords="发票", action="reply", reply_templates="请联系财务")
    assert evaluate("开发票").reply == "请联系财务"

    changelist = reverse("admin:rules_rule_changelist")
    form = {
        "form-TOTAL_FORMS": "1",
        "form-INITIAL_FORMS": "1",
        "form-0-id": str(rule.pk),
        "form-0-priority": "100",
        "form-0-stop": "on",
        "_save": "保存",
    }  # list_editable: "enabled" left unticked
    assert admin_client_logged_in.post(changelist, form).status_code == 302
    assert evaluate("开发票").action == "none"

    Rule.objects.filter(pk=rule.pk).update(enabled=True)
    services.RULES.bump()
    assert evaluate("开发票").action == "reply"
    delete = {"action": "delete_selected", "_selected_action": [rule.pk], "post": "yes"}
    assert admin_client_logged_in.post(changelist, delete).status_code == 302
    assert not Rule.objects.exists() and evaluate("开发票").action == "none"


def test_admin_refuses_an_invalid_regex_and_keeps_the_rules(admin_client_logged_in):
    RuleFactory(name="旧规则", keywords="你好", action="ignore")
    page = admin_client_logged_in.post(
        reverse("admin:rules_rule_add"),
        {
            "name": "坏",
            "priority": 1,
            "enabled": "on",
            "regex": "([",
            "action": "ignore",
            "keyword_mode": "any",
            "chat_type": "any",
            "at_me": "any",
        },
    )
    assert page.status_code == 200 and "正则表达式无效" in page.content.decode()
    assert list(Rule.objects.values_list("name", flat=True)) == ["旧规则"]
    assert evaluate("你好").action == "ignore"
