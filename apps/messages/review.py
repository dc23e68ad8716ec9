"""Humans in the loop: a supervisor approves (optionally edited) or rejects a reply waiting for review, takes a
conversation over or hands it back; the agent reports a person typing in a chat (takeover)."""

import logging

from django.db import transaction
from django.utils import timezone

from apps.core import aio
from apps.engines.memory import invalidate_memory
from apps.knowledge import services as knowledge
from apps.messages import outbox
from apps.messages.models import Conversation, Reply

logger = logging.getLogger("wxcs.pipeline")


def _staff(user):
    return user if getattr(user, "pk", None) else None


def approve(reply_id: int, user=None, content: str | None = None) -> bool:
    """pending_review → queued (optionally edited), then pushed. False when it was not waiting for review or
    there is nothing to send."""
    edited_text = (content or "").strip()
    with transaction.atomic():
        reply = Reply.objects.select_for_update().select_related("message", "conversation").filter(pk=reply_id).first()
        if reply is None or reply.status != Reply.Status.PENDING_REVIEW:
            return False
        edited = bool(edited_text) and edited_text != reply.content
        reply.content = edited_text or reply.content
        if not reply.content:
            return False
        now = timezone.now()
        reply.action = Reply.Action.REPLY
        reply.status = Reply.Status.QUEUED
        reply.reviewed_by = _staff(user)
        reply.reviewed_at = reply.queued_at = now
        if edited:
            reply.source = Reply.Source.HUMAN
        reply.save(update_fields=["content", "action", "status", "reviewed_by", "reviewed_at", "queued_at", "source"])
        outbox.push_on_commit(reply, reply.conversation.chat_name)
    aio.run(invalidate_memory(reply.conversation_id), timeout=10)  # a turn no engine wrote
    _propose_knowledge(reply.message.content, reply.content, reply.id)
    return True


def _propose_knowledge(question: str, answer: str, reply_id: int) -> None:
    try:
        knowledge.propose_candidate(question, answer, reply_id)
    except Exception:  # learning is a side road: the approval stands
        logger.warning("knowledge candidate not recorded for reply %s", reply_id, exc_info=True)


def reject(reply_id: int, user=None) -> bool:
    return bool(
        Reply.objects.filter(pk=reply_id, status=Reply.Status.PENDING_REVIEW).update(
            status=Reply.Status.REJECTED, reviewed_by=_staff(user), reviewed_at=timezone.now()
        )
    )


def take_over(conversation_id: int, user=None) -> None:
    Conversation.objects.filter(pk=conversation_id).update(
        taken_over=True, taken_over_by=_staff(user), taken_over_at=timezone.now()
    )


def hand_back(conversation_id: int) -> None:
    """The bot answers this chat again; the agent is told (`hand_back` frame) so it resumes a chat it
    paused because a person typed in it."""
    Conversation.objects.filter(pk=conversation_id).update(taken_over=False, taken_over_by=None, taken_over_at=None)
    row = Conversation.objects.filter(pk=conversation_id).values_list("agent_id", "chat_name").first()
    if row is not None:
        agent_id, chat = row
        outbox.notify_agent(agent_id, {"type": "hand_back", "chat": chat})


def agent_takeover(agent_id: str, chat_name: str, active: bool = True) -> bool:
    """The agent saw a person typing in this chat (a self message that is not a bot reply); the conversation
    is created if the server has not seen it yet. True when it existed before."""
    if not chat_name:
        return False
    _, created = Conversation.objects.update_or_create(
        agent_id=agent_id,
        chat_name=chat_name[:200],
        defaults={"taken_over": active, "taken_over_at": timezone.now() if active else None},
    )
    return not created
