"""Engines test data: personalities and memories through the engines services; a chat (conversation,
messages and replies from the messages app's factories) whose sender is bound to an ERP customer."""

from dataclasses import dataclass
from datetime import date, timedelta

import factory
from django.utils import timezone

from apps.agents.tests.factories import AgentFactory
from apps.customers.models import Customer, WeChatBinding
from apps.customers.tests.factories import CustomerFactory, WeChatBindingFactory
from apps.engines import services
from apps.engines.models import ContactFact, ConversationSummary, Personality
from apps.erp.models import Contract
from apps.erp.tests.factories import ContractFactory
from apps.messages.models import Conversation, Message, Reply
from apps.messages.tests.factories import ConversationFactory, MessageFactory, ReplyFactory


class PersonalityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Personality

    name = factory.Sequence(lambda n: f"人设{n}")
    system_prompt = "你是一名专业的充电桩客服。"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return services.save_personality(model_class(*args, **kwargs))


class ConversationSummaryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConversationSummary

    conversation_id = factory.Sequence(lambda n: n + 1)
    summary = "客户咨询过安装费用。"


class ContactFactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ContactFact

    agent_id = "agent-1"
    chat_name = "张三"
    contact = "张三"
    fact = factory.Sequence(lambda n: f"客户的第{n}条事实")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return services.save_contact_fact(model_class(*args, **kwargs))


@dataclass
class World:
    """A private chat with 张三, bound to the ERP customer 重庆易充物流 (one contract), beside another
    customer whose data must never leak into it."""

    agent_id: str
    conversation: Conversation
    sender: str
    customer: Customer
    other: Customer
    contract: Contract
    other_contract: Contract

    def exchange(self, text: str, answer: str | None, minutes_ago: float) -> Message:
        """The customer's message `minutes_ago` minutes ago with our delivered answer, or, when `answer`
        is None, waiting to be decided."""
        at = timezone.now() - timedelta(minutes=minutes_ago)
        status = Message.Status.RECEIVED if answer is None else Message.Status.DECIDED
        message = MessageFactory(
            conversation=self.conversation, sender=self.sender, content=text, received_at=at, status=status
        )
        if answer is not None:
            ReplyFactory(
                message=message, content=answer, status=Reply.Status.DELIVERED, created_at=at + timedelta(seconds=5)
            )
        return message


def build_world(sender: str = "张三") -> World:
    conversation = ConversationFactory(agent=AgentFactory(id="agent-1", name="前台电脑"), chat_name=sender)
    customer = CustomerFactory(
        erp_id=1001,
        name="重庆易充物流有限公司",
        k_code="K1001",
        category="企业客户",
        status="合作中",
        contact_name=sender,
        mobile="13800001111",
    )
    other = CustomerFactory(erp_id=2002, name="成都竞品科技有限公司", k_code="K2002", mobile="13900002222")
    contract = ContractFactory(
        erp_id=501,
        customer=customer,
        number="HT-2026-0501",
        title="20 台 7kW 交流充电桩采购",
        amount="86000.00",
        signed_on=date(2026, 3, 18),
        status="执行中",
    )
    other_contract = ContractFactory(
        erp_id=902,
        customer=other,
        number="HT-2026-0902",
        title="机密：超充站建设",
        amount="990000.00",
        signed_on=date(2026, 5, 2),
        status="执行中",
    )
    WeChatBindingFactory(
        agent_id=conversation.agent_id,
        chat_name=sender,
        sender=sender,
        customer=customer,
        status=WeChatBinding.Status.BOUND,
        method=WeChatBinding.Method.MANUAL,
    )
    return World(conversation.agent_id, conversation, sender, customer, other, contract, other_contract)
