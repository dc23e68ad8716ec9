"""The outbox: replies on their way to the agent. Push (to every socket of the agent, on any web process,
through the channel layer), redeliver (every unacked reply again on each (re)connect, oldest first), mark
pushed, ack. A reply stays in the outbox (`queued` / `sent`) until its agent acks it.
"""

import logging

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from apps.agents import services as agent_services
from apps.core import aio
from apps.core.inputs import printable
from apps.core.tracing import bind as trace
from apps.messages.models import Reply
from apps.messages.store import OutboxReply, store

logger = logging.getLogger("wxcs.pipeline")

ACK_STATUSES = (Reply.Status.DELIVERED.value, Reply.Status.FAILED.value)


class AckError(ValueError):
    pass


def agent_group(agent_id: str) -> str:
    return agent_services.socket_group(agent_id)


def message_group(message_id: int) -> str:
    return f"msg.{message_id}"


async def push(agent_id: str, reply: OutboxReply) -> None:
    """To the agent's sockets now; a failure leaves it in the outbox for the next (re)connect."""
    try:
        await get_channel_layer().group_send(agent_group(agent_id), {"type": "reply.push", "frame": reply.frame()})
    except Exception:
        logger.warning("push of reply %s failed; it stays in the outbox", reply.reply_id, exc_info=True)


async def announce_decision(message_id: int) -> None:
    """Tell whoever waits on this message (`POST /api/v1/messages?wait=N`) that it is decided."""
    try:
        await get_channel_layer().group_send(
            message_group(message_id), {"type": "decision.ready", "message_id": message_id}
        )
    except Exception:
        logger.warning("decision of message %s not announced", message_id, exc_info=True)


def push_on_commit(reply: Reply, chat: str) -> None:
    """From sync code (a supervisor's approval): push once the transaction commits."""
    pending = OutboxReply(reply.id, reply.message_id, chat, reply.content, reply.at, reply.created_at)
    agent_id, message_id = reply.agent_id, reply.message_id

    async def deliver() -> None:
        await push(agent_id, pending)
        await announce_decision(message_id)

    transaction.on_commit(lambda: aio.run(deliver(), timeout=10))


async def pending(agent_id: str) -> list[OutboxReply]:
    """Every unacked reply of the agent, oldest first (OUTBOX_PAGE at most)."""
    return await store().outbox(agent_id, settings.OUTBOX_PAGE)


async def mark_sent(agent_id: str, reply_ids: list[int]) -> None:
    if reply_ids:
        await store().mark_sent(agent_id, reply_ids)


async def ack(agent_id: str, reply_id, status, error="") -> dict:
    """Only the owning agent; only queued/sent → delivered/failed; a repeat changes nothing.
    `AckError` for bad input, `LookupError` for a reply that is not this agent's (never a hint it exists)."""
    if status not in ACK_STATUSES:
        raise AckError("status must be delivered or failed")
    if isinstance(reply_id, bool) or not str(reply_id).isdigit():
        raise AckError("reply_id must be an integer")
    reply_id = int(reply_id)
    error = str(error or "")[:2000]
    try:
        printable(error)
    except ValueError as exc:
        raise AckError(f"error {exc}") from None
    acked = await store().ack(agent_id, reply_id, status, error)
    if acked is None:
        raise LookupError(reply_id)
    if acked.changed:
        with trace(acked.trace_id):
            if status == Reply.Status.DELIVERED:
                logger.info("reply %s delivered by the agent", reply_id)
            else:
                logger.warning("reply %s not delivered by the agent: %s", reply_id, error[:200])
    return {"reply_id": reply_id, "status": acked.status, "changed": acked.changed}


def notify_agent(agent_id: str, frame: dict) -> None:
    """A control frame (e.g. `hand_back`) to every socket of the agent, after commit; not kept if offline."""

    async def send() -> None:
        await get_channel_layer().group_send(agent_group(agent_id), {"type": "agent.frame", "frame": frame})

    def run() -> None:
        try:
            aio.run(send(), timeout=10)
        except Exception:
            logger.warning("could not notify agent %s", agent_id, exc_info=True)

    transaction.on_commit(run)
