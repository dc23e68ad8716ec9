"""Messages test data. A `MessageFactory` message is stored as ingest stores it (`received`, undecided)."""

import factory
from django.utils import timezone

from apps.agents.tests.factories import AgentFactory
from apps.messages.models import Conversation, Message, Reply


class ConversationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Conversation

    agent = factory.SubFactory(AgentFactory)
    chat_name = factory.Sequence(lambda n: f"客户{n}")
    chat_type = "private"


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    agent = factory.SelfAttribute("conversation.agent")
    client_msg_id = factory.Sequence(lambda n: f"wx-{n}")
    sender = factory.SelfAttribute("conversation.chat_name")
    content = "充电桩多少钱？"
    received_at = factory.LazyFunction(timezone.now)


class ReplyFactory(factory.django.DjangoModelFactory):
    """A reply in the outbox (queued), unless told otherwise."""

    class Meta:
        model = Reply

    message = factory.SubFactory(MessageFactory, status=Message.Status.DECIDED)
    conversation = factory.SelfAttribute("message.conversation")
    agent = factory.SelfAttribute("message.agent")
    content = "您好，充电桩安装请联系当地服务网点。"
    status = Reply.Status.QUEUED
    confidence = 0.9
