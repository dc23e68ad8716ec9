"""Rules test data: rows saved through the rules services (so every process recompiles, as in admin)."""

from datetime import UTC, datetime

import factory

from apps.rules import services
from apps.rules.models import AdminNickname, RateLimit, Rule
from apps.rules.types import MessageFacts

# 2026-11-23 is a Monday. 02:30 UTC = 10:30 Asia/Shanghai; 15:30 UTC = 23:30 Shanghai (still Monday).
MON_1030 = datetime(2026, 11, 23, 2, 30, tzinfo=UTC)
MON_2330 = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
SUN_1030 = datetime(2026, 11, 22, 2, 30, tzinfo=UTC)
TUE_0730 = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)  # 07:30 Tuesday in Shanghai


class RulesConfigFactory(factory.django.DjangoModelFactory):
    class Meta:
        abstract = True

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        obj = model_class(*args, **kwargs)
        services.save_rule_config(obj)
        return obj


class RuleFactory(RulesConfigFactory):
    class Meta:
        model = Rule

    name = factory.Sequence(lambda n: f"规则{n}")
    action = "ignore"


class RateLimitFactory(RulesConfigFactory):
    class Meta:
        model = RateLimit

    name = factory.Sequence(lambda n: f"限流{n}")
    scope = "user"
    applies_to = "private"
    limit = 2
    window_seconds = 30


class AdminNicknameFactory(RulesConfigFactory):
    class Meta:
        model = AdminNickname

    nickname = factory.Sequence(lambda n: f"管理员{n}")


class MessageFactsFactory(factory.Factory):
    class Meta:
        model = MessageFacts

    agent_id = "a1"
    chat_name = "张三"
    chat_type = "private"
    sender = "张三"
    content = "有人吗"
    is_at_me = False
    received_at = MON_1030


def group_facts(content: str, **kwargs) -> MessageFacts:
    """A message in the group 车友群 that @-mentions us."""
    return MessageFactsFactory(
        content=content, **{"chat_type": "group", "chat_name": "车友群", "is_at_me": True, **kwargs}
    )
