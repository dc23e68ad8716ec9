"""Table-driven rule cases, the default rules, rate limits, admin commands, caching and the preview."""

from datetime import UTC, datetime, time

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.urls import reverse

from apps.rules import demo, services
from apps.rules.models import AdminNickname, ChatMute, RateLimit, Rule
from apps.rules.types import MessageFacts

# 2026-11-23 is a Monday. 02:30 UTC = 10:30 Asia/Shanghai; 15:30 UTC = 23:30 Shanghai (still Monday).
MON_1030 = datetime(2026, 11, 23, 2, 30, tzinfo=UTC)
MON_2330 = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
SUN_1030 = datetime(2026, 11, 22, 2, 30, tzinfo=UTC)
TUE_0730 = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)  # 07:30 Tuesday in Shanghai


def facts(content, *, chat_type="private", chat_name="张三", sender="张三", at_me=False, when=MON_1030, agent="a1"):
    return MessageFacts(
        agent_id=agent,
        chat_name=chat_name,
        chat_type=chat_type,
        sender=sender,
        content=content,
        is_at_me=at_me,
        received_at=when,
    )


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

CASES = [
    # (id, facts kwargs, action, rule, reply / reason contains, tags)
    ("time window across midnight", dict(content="有人吗", when=MON_2330), "reply", "夜间", "夜间模式 23:30", []),
    ("early morning next day", dict(content="有人吗", when=TUE_0730), "reply", "夜间", "夜间模式 07:30", []),
    ("weekday list in Shanghai time", dict(content="有人吗", when=SUN_1030), "reply", "周末", "周末值班 周日", []),
    ("nothing matches", dict(content="有人吗"), "none", "", "没有规则命中", []),
    (
        "group glob + @ → route",
        dict(content="查一下", chat_type="group", chat_name="VIP客户群", at_me=True),
        "route",
        "VIP群路由",
        "",
        [],
    ),
    (
        "group without @ ignored",
        dict(content="查一下", chat_type="group", chat_name="普通群"),
        "ignore",
        "群里没@",
        "",
        [],
    ),
    (
        "group with @ but not VIP",
        dict(content="你好", chat_type="group", chat_name="普通群", at_me=True),
        "none",
        "",
        "",
        [],
    ),
    ("private greeting", dict(content="你好", sender="小明"), "reply", "私聊问候", "您好 小明", []),
    ("greeting too long", dict(content="你好啊我想问"), "none", "", "", []),
    (
        "same greeting in a group (@) does not match private rule",
        dict(content="你好", chat_type="group", chat_name="普通群", at_me=True),
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
def table_rules(db):
    for row in RULES:
        Rule.objects.create(**row)


@pytest.mark.parametrize("case_id, kwargs, action, rule_name, text, tags", CASES, ids=[c[0] for c in CASES])
def test_rule_table(table_rules, case_id, kwargs, action, rule_name, text, tags):
    decision = services.evaluate(facts(**kwargs))
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


def test_trace_explains_why_rules_did_not_match(table_rules):
    decision = services.evaluate(facts("有人吗"))
    why = {t["rule"]: t["why"] for t in decision.trace if t["step"] == "rule"}
    assert why["夜间"] == "10:30 不在时间段内"
    assert why["周末"] == "今天是周一"
    assert why["VIP群路由"] == "会话类型是私聊"
    assert why["退款+发票"] == "缺少关键词 退款/发票"


def test_evaluation_is_deterministic(table_rules):
    first = services.evaluate(facts("订单 A123456 我要投诉"))
    for _ in range(20):
        again = services.evaluate(facts("订单 A123456 我要投诉"))
        assert (again.action, again.reply, again.reason, again.tags, again.trace) == (
            first.action,
            first.reply,
            first.reason,
            first.tags,
            first.trace,
        )


def test_naive_time_is_read_as_shanghai(table_rules):
    decision = services.evaluate(facts("有人吗", when=datetime(2026, 11, 23, 23, 30)))
    assert decision.rule_name == "夜间"


def test_changes_invalidate_the_compiled_rules(table_rules, settings):
    settings.RULES_VERSION_CHECK_MS = 60_000
    assert services.evaluate(facts("有人吗")).action == "none"
    Rule.objects.create(name="新规则", priority=50, keywords="有人", action="reply", reply_templates="有的")
    assert services.evaluate(facts("有人吗")).reply == "有的"  # same process: at once
    compiled = services.get_ruleset()
    Rule.objects.filter(name="新规则").update(reply_templates="另一个进程改的")  # no signal: another process
    cache.set(services.VERSION_KEY, "other", timeout=None)
    assert services.get_ruleset() is compiled  # checked at most once per interval
    settings.RULES_VERSION_CHECK_MS = 0
    assert services.evaluate(facts("有人吗")).reply == "另一个进程改的"


# --- defaults from seed_demo -------------------------------------------------------------------------
@pytest.fixture
def default_rules(db):
    class Quiet:
        def write(self, *a, **k):
            pass

    demo.seed(Quiet())
    demo.seed(Quiet())  # idempotent
    assert Rule.objects.count() == len(demo.DEFAULT_RULES)


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
def test_default_rules(default_rules, content, action, rule):
    decision = services.evaluate(facts(content, sender="客户甲"))
    assert (decision.action, decision.rule_name) == (action, rule), decision.trace
    if action == "reply":
        assert "客户甲" in decision.reply or "智能客服" in decision.reply
    if content.startswith("你好，我家"):
        assert decision.tags == ["故障咨询"]


def test_default_group_rules_and_rate_limits(default_rules):
    group = dict(chat_type="group", chat_name="车友群", at_me=True)
    assert services.evaluate(facts("转人工", chat_type="group", chat_name="车友群")).action == "ignore"  # no @
    assert services.evaluate(facts("E01 怎么办", sender="甲", **group)).action == "none"
    # per user: 1 per 30 s in a group → the same sender's next message in the window is ignored
    second = services.evaluate(facts("E02 呢", sender="甲", **group))
    assert second.action == "ignore" and "每人每30秒" in second.reason and second.tags == ["故障咨询", "rate_limited"]
    # per group: 20 per minute
    for n in range(18):
        assert services.evaluate(facts(f"问题{n}", sender=f"用户{n}", **group)).action == "none"
    over = services.evaluate(facts("再问一个", sender="用户99", **group))
    assert over.action == "ignore" and "每群每分钟" in over.reason
    # private chats are not limited by the default (group) limits
    for _ in range(3):
        assert services.evaluate(facts("E01 怎么办", sender="乙")).action == "none"


def test_rate_limit_action_is_configurable(db):
    RateLimit.objects.create(
        name="私聊每人",
        scope="user",
        applies_to="private",
        limit=2,
        window_seconds=30,
        action="reply",
        reply_text="{sender}，您发得太快了",
    )
    assert [services.evaluate(facts("问", sender="丙")).action for _ in range(2)] == ["none", "none"]
    third = services.evaluate(facts("问", sender="丙"))
    assert third.action == "reply" and third.reply == "丙，您发得太快了"
    # the next window starts afresh
    later = services.evaluate(facts("问", sender="丙", when=MON_1030.replace(minute=31)))
    assert later.action == "none"


# --- admin commands -------------------------------------------------------------------------------------
def test_admin_commands_mute_status_unmute(default_rules, settings):
    settings.RULES_ADMIN_NICKNAMES = ["店长"]
    AdminNickname.objects.create(nickname="值班经理")
    group = dict(chat_type="group", chat_name="车友群", at_me=True)

    not_admin = services.evaluate(facts("#mute", sender="路人", **group))
    assert not_admin.action != "reply" or "静音" not in not_admin.reply
    muted = services.evaluate(facts("#mute", sender="店长", chat_type="group", chat_name="车友群"))
    assert muted.action == "reply" and "已静音" in muted.reply and muted.tags == ["admin_command"]
    assert ChatMute.objects.filter(chat_name="车友群", muted_by="店长").exists()
    silenced = services.evaluate(facts("人工", sender="客户", **group))
    assert silenced.action == "ignore" and "静音" in silenced.reason
    assert (
        services.evaluate(facts("人工", sender="客户", chat_name="别的群", chat_type="group", at_me=True)).action
        == "handoff"
    )

    status = services.evaluate(facts("#status", sender="值班经理", chat_type="group", chat_name="车友群"))
    assert "已静音" in status.reply and "启用规则：5 条" in status.reply

    assert "已恢复" in services.evaluate(facts("#UNMUTE", sender="店长", chat_type="group", chat_name="车友群")).reply
    assert services.evaluate(facts("人工", sender="客户2", **group)).action == "handoff"


def test_timed_mute_expires(db, settings):
    settings.RULES_ADMIN_NICKNAMES = ["店长"]
    reply = services.evaluate(facts("#mute 30", sender="店长")).reply
    assert "至" in reply
    mute = ChatMute.objects.get()
    assert mute.until is not None
    ChatMute.objects.filter(pk=mute.pk).update(until=datetime(2020, 1, 1, tzinfo=UTC))
    services.bump_version()
    assert services.evaluate(facts("你好", sender="客户")).action == "none"


# --- admin preview -----------------------------------------------------------------------------------------
def test_admin_preview_shows_the_rule_and_why_without_side_effects(client, default_rules):
    user = get_user_model().objects.create_superuser("boss", password="pw-123456")
    client.force_login(user)
    url = reverse("admin:rules_rule_preview")
    assert client.get(url).status_code == 200
    data = {
        "content": "我要转人工",
        "chat_name": "车友群",
        "chat_type": "group",
        "sender": "甲",
        "is_at_me": "on",
        "agent_id": "a1",
        "received_at": "2026-11-23T10:30",
    }
    for _ in range(3):  # dry run: the per-user limit (1 / 30 s) is never consumed
        html = client.post(url, data).content.decode()
        assert 'id="decision-action"><strong>handoff' in html
        assert "客户要求人工" in html and "包含关键词" in html and "预览不计数" in html
    assert (
        services.evaluate(facts("我要转人工", chat_type="group", chat_name="车友群", sender="甲", at_me=True)).action
        == "handoff"
    )
    assert client.get(reverse("admin:rules_rule_changelist")).status_code == 200


def test_invalid_regex_is_rejected_in_admin(db):
    from django.core.exceptions import ValidationError

    rule = Rule(name="坏", regex="([", action="ignore")
    with pytest.raises(ValidationError):
        rule.full_clean()
