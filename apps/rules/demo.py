"""Rules' part of seed_demo: the default rules and rate limits of the issue (idempotent, by name)."""

from datetime import time

from django.db import transaction

from .models import RateLimit, Rule
from .services import RULES

GREETING_REGEX = r"^(你好|您好|在吗|在不|在么|哈喽|嗨|早|早安|早上好|午安|晚上好|hi|hello)[呀啊吗么哈~～!！。.?？]*$"

DEFAULT_RULES = [
    {
        "name": "群聊未@我不回复",
        "priority": 5,
        "chat_type": "group",
        "at_me": "no",
        "action": "ignore",
        "note": "群里只回答@机器人的消息",
    },
    {
        "name": "客户要求人工",
        "priority": 10,
        "keywords": "人工\n转接\n真人",
        "action": "handoff",
        "handoff_reason": "客户要求人工（{keyword}）",
    },
    {
        "name": "敏感话题转人工",
        "priority": 20,
        "keywords": "价格\n报价\n合同\n交付时间\n法律\n隐私\n个人信息",
        "action": "handoff",
        "handoff_reason": "敏感话题：{keyword}，需人工确认",
    },
    {
        "name": "短问候",
        "priority": 30,
        "regex": GREETING_REGEX,
        "max_length": 3,
        "action": "reply",
        "reply_templates": "\n".join(
            [
                "您好，{sender}！请问有什么可以帮您？",
                "在的～{sender}，请直接描述您的问题，我来帮您查。",
                "您好，我是充电桩智能客服，请问有什么需要？",
            ]
        ),
    },
    {
        "name": "报警码咨询打标签",
        "priority": 40,
        "regex": r"(?<![A-Za-z0-9])[Ee]\s?\d{1,2}(?![0-9])",
        "action": "tag",
        "tags": "故障咨询",
        "stop": False,
        "note": "只打标签，继续交给知识库/引擎回答",
    },
    {
        "name": "夜间自动回复",
        "priority": 50,
        "enabled": False,
        "time_start": time(22, 0),
        "time_end": time(8, 0),
        "action": "reply",
        "stop": False,
        "reply_templates": "现在是非工作时间（{time}），客服 8:00 上线后会第一时间回复您。",
        "note": "示例：跨午夜的时间段；启用后夜间所有消息先回复这句",
    },
]

DEFAULT_LIMITS = [
    {
        "name": "每群每分钟",
        "scope": "group",
        "applies_to": "group",
        "limit": 20,
        "window_seconds": 60,
        "action": "ignore",
    },
    {
        "name": "每人每30秒",
        "scope": "user",
        "applies_to": "group",
        "limit": 1,
        "window_seconds": 30,
        "action": "ignore",
    },
]


def seed(stdout) -> None:
    with transaction.atomic():
        for row in DEFAULT_RULES:
            Rule.objects.get_or_create(name=row["name"], defaults={k: v for k, v in row.items() if k != "name"})
        for row in DEFAULT_LIMITS:
            RateLimit.objects.get_or_create(name=row["name"], defaults={k: v for k, v in row.items() if k != "name"})
        RULES.bump()
    stdout.write(f"rules: {Rule.objects.count()} rules, {RateLimit.objects.count()} rate limits")
