"""Rows of the pipeline's models, created the way the pipeline leaves them (for dashboard/alert readings)."""

import itertools
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from apps.agents.models import Agent
from apps.messages.models import Conversation, Message, Reply

_ids = itertools.count(1)


def agent(agent_id: str = "agt_test", *, online: bool = True, queue_size: int = 0) -> Agent:
    now = timezone.now()
    obj, _ = Agent.objects.update_or_create(
        id=agent_id,
        defaults={
            "name": agent_id,
            "secret_hash": "!",
            "reported_presence": "online" if online else "offline",
            "last_seen": now if online else now - timedelta(hours=1),
            "last_heartbeat": {"queue_size": queue_size},
        },
    )
    return obj


def message_with_reply(
    the_agent: Agent,
    *,
    response_ms: float = 800,
    status: str = "delivered",
    cost: str = "0.002",
    chat: str = "客户A",
    at=None,
) -> Reply:
    received = at or timezone.now() - timedelta(milliseconds=response_ms)
    conversation, _ = Conversation.objects.get_or_create(agent=the_agent, chat_name=chat)
    message = Message.objects.create(
        agent=the_agent,
        conversation=conversation,
        client_msg_id=f"m{next(_ids)}",
        sender="张三",
        content="你好，请问发货了吗？",
        received_at=received,
        status="decided",
    )
    return Reply.objects.create(
        message=message,
        conversation=conversation,
        agent=the_agent,
        content="已发货",
        status=status,
        cost=Decimal(cost),
        created_at=received + timedelta(milliseconds=response_ms),
    )
