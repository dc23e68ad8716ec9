"""#mute / #unmute / #status sent in WeChat by an admin nickname; anyone else is an ordinary customer."""

from datetime import UTC, datetime

import pytest
from asgiref.sync import sync_to_async

from apps.rules import services
from apps.rules.models import ChatMute

from .factories import AdminNicknameFactory, MessageFactsFactory, group_facts

pytestmark = pytest.mark.django_db(transaction=True)


async def test_mute_status_unmute(default_rules, settings):
    settings.RULES_ADMIN_NICKNAMES = ["店长"]
    await sync_to_async(AdminNicknameFactory)(nickname="值班经理")

    muted = await services.evaluate(group_facts("#mute", sender="店长", is_at_me=False))
    assert muted.action == "reply" and "已静音" in muted.reply and muted.tags == ["admin_command"]
    assert await ChatMute.objects.filter(chat_name="车友群", muted_by="店长").aexists()
    silenced = await services.evaluate(group_facts("人工", sender="客户"))
    assert silenced.action == "ignore" and "静音" in silenced.reason
    assert (await services.evaluate(group_facts("人工", sender="客户", chat_name="别的群"))).action == "handoff"

    status = await services.evaluate(group_facts("#status", sender="值班经理", is_at_me=False))
    assert "已静音" in status.reply and "启用规则：5 条" in status.reply

    unmuted = await services.evaluate(group_facts("#UNMUTE", sender="店长", is_at_me=False))
    assert "已恢复" in unmuted.reply
    assert (await services.evaluate(group_facts("人工", sender="客户2"))).action == "handoff"


async def test_a_command_from_someone_else_is_an_ordinary_message(default_rules, settings):
    settings.RULES_ADMIN_NICKNAMES = ["店长"]
    decision = await services.evaluate(group_facts("#mute", sender="路人"))
    assert decision.tags != ["admin_command"] and "静音" not in decision.reply
    assert not await ChatMute.objects.aexists()
    step = next(s for s in decision.trace if s["step"] == "admin_command")
    assert step["matched"] is False and "不是管理员" in step["why"]


async def test_timed_mute_expires(settings):
    settings.RULES_ADMIN_NICKNAMES = ["店长"]
    reply = (await services.evaluate(MessageFactsFactory(content="#mute 30", sender="店长"))).reply
    assert "至" in reply
    mute = await ChatMute.objects.aget()
    assert mute.until is not None
    assert (await services.evaluate(MessageFactsFactory(content="你好", sender="客户"))).action == "ignore"

    mute.until = datetime(2020, 1, 1, tzinfo=UTC)
    await sync_to_async(services.save_rule_config)(mute)
    assert (await services.evaluate(MessageFactsFactory(content="你好", sender="客户"))).action == "none"
