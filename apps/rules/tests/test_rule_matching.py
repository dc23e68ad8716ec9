"""Which rule decides a message: table-driven cases, the seeded defaults, the trace, determinism."""

from datetime import datetime, time

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError

from apps.rules import services
from apps.rules.models import Rule

from .factories import MON_2330, SUN_1030, TUE_0730, MessageFactsFactory, RuleFactory

pytestmark = pytest.mark.django_db(transaction=True)

RULES = [
    dict(
        name="夜间",
        priority=1,
        time_start=time(22, 0),
        time_end=time(8, 0),
        action="reply",
        reply_templates="夜间模式 {time}",
        stop=True,
    ),
    dict(name="周末", priority=2, weekdays="67", action="reply", reply_templates="周末值班 {weekday}", stop=True),
    dict(
        name="VIP群路由",
        priority=3,
        chat_type="group",
        chat_names="VIP*",
        at_me="yes",
        action="route",
        engine="chat",
        personality_id=7,
        stop=True,
    ),
    dict(name="群里没@", priority=4, chat_type="group", at_me="no", action="ignore", stop=True),
    dict(name="订单号", priority=10, regex=r"订单\s*[A-Z]\d{6}", action="tag", tags="订单查询", stop=False),
    dict(
        name="投诉", priority=11, keywords="投诉，差评", action="handoff", handoff_reason="投诉：{keyword}", stop=False
    ),
    dict(
        name="退款+发票",
        priority=12,
        keywords="退款\n发票",
        keyword_mode="all",
        action="reply",
        reply_templates="退款和发票请联系财务",
        stop=True,
    ),
    dict(name="老板", priority=13, senders="王总\n李*", action="tag", tags="重要客户", stop=False),
    dict(name="停止标签", priority=14, keywords="停", action="tag", tags="停", stop=True),
    dict(name="在停之后", priority=15, keywords="停", action="reply", reply_templates="不应出现", stop=True),
    dict(
        name="私聊问候",
        priority=20,
        chat_type="private",
        regex=r"^(你好|在吗)[?？]?$",
        max_length=3,
        action="reply",
        reply_templates="您好 {sender}",
    ),
    dict(name="禁用的", priority=0, enabled=False, keywords="你好", action="ignore"),
]

GROUP = dict(chat_type="group", chat_name="普通群")
CASES = [
    # (id, facts, action, rule, reply / reason contains, tags)
    ("time window across midnight", dict(received_at=MON_2330), "reply", "夜间", "夜间模式 23:30", []),
    ("early morning next day", dict(received_at=TUE_0730), "reply", "夜间", "夜间模式 07:30", []),
    ("weekday list in Shanghai time", dict(received_at=SUN_1030), "reply", "周末", "周末值班 周日", []),
    ("nothing matches", dict(), "none", "", "没有规则命中", []),
    (
        "group glob + @ → route",
        dict(content="查一下", chat_type="group", chat_name="VIP客户群", is_at_me=True),
        "route",
        "VIP群路由",
        "",
        [],
    ),
    ("group without @ ignored", dict(content="查一下", **GROUP), "ignore", "群里没@", "", []),
    ("group with @ but not VIP", dict(content="你好", is_at_me=True, **GROUP), "none", "", "", []),
    ("private greeting", dict(content="你好", sender="小明"), "reply", "私聊问候", "您好 小明", []),
    ("greeting too long", dict(content="你好啊我想问"), "none", "", "", []),
    (
        "same greeting in a group (@) does not match private rule",
        dict(content="你好", is_at_me=True, **GROUP),
        "none",
        "",
        "",
        [],
    ),
    (
        "regex tag, then keyword handoff (no stop) keeps tags",
        dict(content="订单 A123456 我要投诉"),
        "handoff",
        "投诉",
        "投诉：投诉",
        ["订单查询"],
    ),
    (
        "first decisive rule wins, later matches only add tags",
        dict(content="差评！", sender="王总"),
        "handoff",
        "投诉",
        "投诉：差评",
        ["重要客户"],
    ),
    ("keywords all: both needed", dict(content="退款和发票怎么弄"), "reply", "退款+发票", "退款和发票请联系财务", []),
    ("keywords all: one missing", dict(content="退款怎么弄"), "none", "", "", []),
    ("sender glob", dict(content="随便问问", sender="李四"), "none", "", "", ["重要客户"]),
    ("stop flag on a tag rule halts later rules", dict(content="停一下"), "none", "", "", ["停"]),
    (
        "case-insensitive regex / priority over disabled rule",
        dict(content="你好"),
        "reply",
        "私聊问候",
        "您好 张三",
        [],
    ),
]


@pytest.fixture
def table_rules(transactional_db):
    for row in RULES:
        RuleFactory(**row)


@pytest.mark.parametrize("case_id, kwargs, action, rule_name, text, tags", CASES, ids=[c[0] for c in CASES])
async def test_rule_table(table_rules, case_id, kwargs, action, rule_name, text, tags):
    decision = await services.evaluate(MessageFactsFactory(**kwargs))
    assert decision.action == action, decision.trace
    assert decision.rule_name == rule_name
    if text:
        assert text in (decision.reply or decision.reason)
    assert decision.tags == tags
    if action == "route":
        assert (decision.engine, decision.personality_id) == ("chat", 7)
    # every enabled rule that was reached is in the trace, with a reason
    tried = [t for t in decision.trace if t["step"] == "rule"]
    assert tried and all(t["why"] for t in tried)
    assert "禁用的" not in [t["rule"] for t in tried]


async def test_trace_explains_why_rules_did_not_match(table_rules):
    decision = await services.evaluate(MessageFactsFactory(content="有人吗"))
    why = {t["rule"]: t["why"] for t in decision.trace if t["step"] == "rule"}
    assert why["夜间"] == "10:30 不在时间段内"
    assert why["周末"] == "今天是周一"
    assert why["VIP群路由"] == "会话类型是私聊"
    assert why["退款+发票"] == "缺少关键词 退款/发票"


async def test_evaluation_is_deterministic(table_rules):
    facts = MessageFactsFactory(content="订单 A123456 我要投诉")
    first = await services.evaluate(facts)
    for _ in range(20):
        again = await services.evaluate(facts)
        assert (again.action, again.reply, again.reason, again.tags, again.trace) == (
            first.action,
            first.reply,
            first.reason,
            first.tags,
            first.trace,
        )


async def test_naive_time_is_read_as_shanghai(table_rules):
    decision = await services.evaluate(MessageFactsFactory(received_at=datetime(2026, 11, 23, 23, 30)))
    assert decision.rule_name == "夜间"


async def test_a_template_with_a_stray_brace_is_sent_as_written():
    await sync_to_async(RuleFactory)(keywords="价格", action="reply", reply_templates="价格见 {price 表")
    decision = await services.evaluate(MessageFactsFactory(content="价格多少"))
    assert decision.reply == "价格见 {price 表"


@pytest.mark.parametrize(
    "content, action, rule",
    [
        ("我要转人工", "handoff", "客户要求人工"),
        ("帮我转接一下", "handoff", "客户要求人工"),
        ("你们的报价是多少", "handoff", "敏感话题转人工"),
        ("交付时间能确定吗", "handoff", "敏感话题转人工"),
        ("你们怎么保护个人信息", "handoff", "敏感话题转人工"),
        ("你好", "reply", "短问候"),
        ("在吗？", "reply", "短问候"),
        ("你好，我家的桩报E01", "none", ""),
        ("充电桩质保多久", "none", ""),
    ],
)
async def test_default_rules(default_rules, content, action, rule):
    decision = await services.evaluate(MessageFactsFactory(content=content, sender="客户甲"))
    assert (decision.action, decision.rule_name) == (action, rule), decision.trace
    if action == "reply":
        assert "客户甲" in decision.reply or "智能客服" in decision.reply
    if content.startswith("你好，我家"):
        assert decision.tags == ["故障咨询"]


def test_an_invalid_rule_is_rejected_before_it_is_saved():
    for bad in (
        Rule(name="坏正则", regex="([", action="ignore"),
        Rule(name="半个时间段", time_start=time(9, 0), action="ignore"),
        Rule(name="星期", weekdays="18", action="ignore"),
        Rule(name="没模板", action="reply"),
        Rule(name="无处路由", action="route"),
    ):
        with pytest.raises(ValidationError):
            bad.full_clean()
    assert not Rule.objects.exists()
