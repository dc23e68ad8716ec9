"""Rate limits: fixed windows counted in Redis, per group or per user, with a configurable action."""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from apps.core import redis
from apps.rules import services

from .factories import MON_1030, MessageFactsFactory, RateLimitFactory, group_facts

pytestmark = pytest.mark.django_db(transaction=True)


async def test_default_group_limits(default_rules):
    evaluate = services.evaluate
    assert (await evaluate(group_facts("转人工", is_at_me=False))).action == "ignore"  # no @: not counted
    assert (await evaluate(group_facts("E01 怎么办", sender="甲"))).action == "none"
    # per user: 1 per 30 s in a group → the same sender's next message in the window is ignored
    second = await evaluate(group_facts("E02 呢", sender="甲"))
    assert second.action == "ignore" and "每人每30秒" in second.reason and second.tags == ["故障咨询", "rate_limited"]
    # per group: 20 per minute
    for n in range(18):
        assert (await evaluate(group_facts(f"问题{n}", sender=f"用户{n}"))).action == "none"
    over = await evaluate(group_facts("再问一个", sender="用户99"))
    assert over.action == "ignore" and "每群每分钟" in over.reason
    # private chats are not limited by the default (group) limits
    for _ in range(3):
        assert (await evaluate(MessageFactsFactory(content="E01 怎么办", sender="乙"))).action == "none"


async def test_concurrent_messages_are_each_counted_once(default_rules):
    """Fifty group messages decided at once (their counters share one Redis pipeline): exactly the
    first twenty of the minute pass the group's limit."""
    facts = [group_facts(f"问题{n}", sender=f"用户{n}") for n in range(50)]
    decisions = await asyncio.gather(*(services.evaluate(f) for f in facts))
    assert sum(d.action == "none" for d in decisions) == 20
    assert all("每群每分钟" in d.reason for d in decisions if d.action != "none")


async def test_rate_limit_action_is_configurable():
    await sync_to_async(RateLimitFactory)(
        name="私聊每人", limit=2, window_seconds=30, action="reply", reply_text="{sender}，您发得太快了"
    )
    facts = MessageFactsFactory(content="问", sender="丙")
    assert [(await services.evaluate(facts)).action for _ in range(2)] == ["none", "none"]
    third = await services.evaluate(facts)
    assert third.action == "reply" and third.reply == "丙，您发得太快了"
    # the next window starts afresh
    later = await services.evaluate(
        MessageFactsFactory(content="问", sender="丙", received_at=MON_1030.replace(minute=31))
    )
    assert later.action == "none"


async def test_a_redis_outage_does_not_hold_replies_back(monkeypatch):
    await sync_to_async(RateLimitFactory)(name="私聊每人", limit=1, window_seconds=30, action="ignore")

    async def redis_down(command, *args):
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(redis, "batched", redis_down)
    facts = MessageFactsFactory(content="问", sender="丁")
    decisions = [await services.evaluate(facts) for _ in range(3)]
    assert [d.action for d in decisions] == ["none", "none", "none"]
    assert not any(step["step"] == "rate_limit" for step in decisions[-1].trace)
