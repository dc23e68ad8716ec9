"""The outbox: replies on their way to the agent. Push (to every socket of the agent, on any web process,
through the channel layer), redeliver (the whole unacked backlog on each (re)connect, in pages, oldest first;
and, while the agent is connected, every reply whose last push is older than OUTBOX_REDELIVER_AFTER, by beat's
sweep), mark pushed, ack. A reply stays in the outbox (`queued` / `sent`) until its agent acks it.

Why the sweep: a push is one PUBLISH on the channel layer; nobody answers it. A publish that fails (Redis away,
a stale connection) or that finds no subscriber (the web process's subscription is being re-made after its
Redis connection dropped) loses the frame, and only an ack proves it arrived. The agent never sends a reply
twice (its ledger), so pushing one again is safe.
"""

import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.agents import services as agent_services
from apps.core import aio
from apps.core.db import run_db
from apps.core.inputs import printable
from apps.core.tracing import bind as trace
from apps.messages import selectors
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


async def push(agent_id: str, reply: OutboxReply, *, redelivery: bool = False) -> bool:
    """To the agent's sockets now; False when the publish failed (it stays in the outbox: beat's sweep pushes it
    again while the agent is connected, and so does its next (re)connect). `redelivery`: the sockets send it even
    if it was in their connect backlog."""
    event = {"type": "reply.push", "frame": reply.frame(), "redelivery": redelivery}
    try:
        await get_channel_layer().group_send(agent_group(agent_id), event)
    except Exception:
        logger.warning("push of reply %s failed; it stays in the outbox", reply.reply_id, exc_info=True)
        return False
    return True


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
    """The agent's oldest unacked replies, oldest first (OUTBOX_PAGE at most: the REST fallback's page)."""
    return await store().outbox(agent_id, settings.OUTBOX_PAGE)


async def backlog(agent_id: str) -> AsyncIterator[list[OutboxReply]]:
    """Every unacked reply of the agent, oldest first, OUTBOX_PAGE at a time (keyset pages: a reply acked
    meanwhile never shifts the next page)."""
    after_id = 0
    while page := await store().outbox(agent_id, settings.OUTBOX_PAGE, after_id):
        yield page
        if len(page) < settings.OUTBOX_PAGE:
            return
        after_id = page[-1].reply_id


async def redeliver_stale() -> int:
    """Push again every unacked reply of a connected agent whose last push is older than OUTBOX_REDELIVER_AFTER
    (OUTBOX_PAGE per agent per run, oldest first), and mark them pushed. Idempotent: a reply just pushed is not
    due again for OUTBOX_REDELIVER_AFTER seconds; a reply whose publish failed stays due. Returns how many."""
    before = timezone.now() - timedelta(seconds=settings.OUTBOX_REDELIVER_AFTER)
    pushed = 0
    for agent_id in await run_db(selectors.agents_with_stale_outbox, before):
        due = await run_db(selectors.stale_outbox, agent_id, before, settings.OUTBOX_PAGE)
        done = []
        for reply in due:
            if not await push(agent_id, reply, redelivery=True):
                break  # Redis refuses: the rest stays due for the next run
            done.append(reply.reply_id)
        await mark_sent(agent_id, done)
        if done:
            logger.warning("agent %s: %d unacked replies pushed again", agent_id, len(done))
        pushed += len(done)
    return pushed


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
