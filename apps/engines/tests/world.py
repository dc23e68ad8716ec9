"""Rows the engine tests need from other apps: an agent, a conversation with messages and replies,
a customer bound to the chat's sender with contracts, and a second customer with its own."""

from dataclasses import dataclass
from datetime import date, timedelta

from django.utils import timezone

from apps.agents.services import create_agent
from apps.customers.models import Customer, WeChatBinding
from apps.erp.models import Contract
from apps.messages.models import Conversation, Message, Reply


@dataclass
class World:
    agent_id: str
    conversation: Conversation
    sender: str
    customer: Customer
    other: Customer
    contract: Contract
    other_contract: Contract


def make_world(sender: str = "张三", chat_name: str = "张三") -> World:
    agent, _ = create_agent("前台电脑", agent_id="agent-1")
    conversation = Conversation.objects.create(agent=agent, chat_name=chat_name, chat_type="private")
    customer = Customer.objects.create(
        erp_id=1001,
        name="重庆易充物流有限公司",
        k_code="K1001",
        category="企业客户",
        status="合作中",
        contact_name=sender,
        mobile="13800001111",
    )
    other = Customer.objects.create(erp_id=2002, name="成都竞品科技有限公司", k_code="K2002", mobile="13900002222")
    contract = Contract.objects.create(
        erp_id=501,
        customer=customer,
        number="HT-2026-0501",
        title="20 台 7kW 交流充电桩采购",
        amount="86000.00",
        signed_on=date(2026, 3, 18),
        status="执行中",
    )
    other_contract = Contract.objects.create(
        erp_id=902,
        customer=other,
        number="HT-2026-0902",
        title="机密：超充站建设",
        amount="990000.00",
        signed_on=date(2026, 5, 2),
        status="执行中",
    )
    WeChatBinding.objects.create(
        agent_id=agent.id,
        chat_name=chat_name,
        sender=sender,
        customer=customer,
        status=WeChatBinding.Status.BOUND,
        method=WeChatBinding.Method.MANUAL,
    )
    return World(agent.id, conversation, sender, customer, other, contract, other_contract)


def add_exchange(world: World, text: str, answer: str | None, minutes_ago: float, number: int) -> Message:
    at = timezone.now() - timedelta(minutes=minutes_ago)
    message = Message.objects.create(
        agent_id=world.agent_id,
        conversation=world.conversation,
        client_msg_id=f"m{number}",
        sender=world.sender,
        content=text,
        received_at=at,
    )
    if answer is not None:
        Reply.objects.create(
            message=message,
            conversation=world.conversation,
            agent_id=world.agent_id,
            content=answer,
            status=Reply.Status.DELIVERED,
            created_at=at + timedelta(seconds=5),
        )
    return message
