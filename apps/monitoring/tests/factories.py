"""Monitoring test data: notification channels, alert rules and events, and replies timed as the pipeline
leaves them (built on the messages app's factories) for the dashboard's and alerts' readings."""

from datetime import timedelta
from decimal import Decimal

import factory
from django.utils import timezone

from apps.agents.tests.factories import AgentFactory
from apps.messages.models import Message, Reply
from apps.messages.tests.factories import ConversationFactory, MessageFactory, ReplyFactory
from apps.monitoring.models import AlertEvent, AlertRule, NotificationChannel


class NotificationChannelFactory(factory.django.DjangoModelFactory):
    """A generic webhook; give `kind="dingtalk"` and a `secret` for a signed DingTalk robot."""

    class Meta:
        model = NotificationChannel

    name = factory.Sequence(lambda n: f"渠道{n}")
    kind = NotificationChannel.Kind.WEBHOOK
    target = "http://127.0.0.1:9/hook"


class AlertRuleFactory(factory.django.DjangoModelFactory):
    """Fires when an agent's offline queue exceeds 100; `channels=[...]` to be notified."""

    class Meta:
        model = AlertRule
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"离线队列积压{n}")
    metric = AlertRule.Metric.OFFLINE_QUEUE
    comparison = AlertRule.Comparison.GT
    threshold = 100

    @factory.post_generation
    def channels(self, create, extracted, **kwargs):
        if create and extracted:
            self.channels.add(*extracted)


class AlertEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AlertEvent

    rule = factory.SubFactory(AlertRuleFactory)
    value = 500


class TimedReplyFactory(ReplyFactory):
    """A decided message answered `response_ms` after it arrived (the reply created now), delivered, as
    the dashboard's and the alerts' readings see the pipeline's rows. `agent=` puts it on that agent."""

    class Params:
        response_ms = 800

    agent = factory.SubFactory(AgentFactory)
    message = factory.SubFactory(
        MessageFactory,
        conversation=factory.SubFactory(ConversationFactory, agent=factory.SelfAttribute("...agent")),
        status=Message.Status.DECIDED,
        received_at=factory.LazyAttribute(
            lambda m: timezone.now() - timedelta(milliseconds=m.factory_parent.response_ms)
        ),
    )
    status = Reply.Status.DELIVERED
    cost = Decimal("0.002")
    created_at = factory.LazyAttribute(lambda o: o.message.received_at + timedelta(milliseconds=o.response_ms))
