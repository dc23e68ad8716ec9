"""The engines' view of a conversation (apps.engines.history.ConversationHistory), read from this app's
models; registered in MessagesConfig.ready()."""

from apps.engines.history import ConversationRef, register_history
from apps.messages.models import Conversation, Message, Reply


class MessageHistory:
    def conversation(self, conversation_id: int) -> ConversationRef | None:
        row = (
            Conversation.objects.filter(pk=conversation_id)
            .values("id", "agent_id", "chat_name", "chat_type", "personality_id")
            .first()
        )
        if row is None:
            return None
        return ConversationRef(
            id=row["id"],
            agent_id=str(row["agent_id"]),
            chat_name=row["chat_name"],
            chat_type=row["chat_type"] or "private",
            personality_id=row["personality_id"],
        )

    def conversation_id_for(self, agent_id: str, chat_name: str) -> int | None:
        return Conversation.objects.filter(agent_id=agent_id, chat_name=chat_name).values_list("id", flat=True).first()

    def set_engine_override(self, conversation_id: int, engine: str) -> bool:
        return Conversation.objects.filter(pk=conversation_id).update(engine_override=engine) == 1

    def latest_sender(self, conversation_id: int) -> str:
        return (
            Message.objects.filter(conversation_id=conversation_id)
            .order_by("-received_at", "-id")
            .values_list("sender", flat=True)
            .first()
            or ""
        )

    def turns_between(self, conversation_id: int, start, end=None, *, limit: int, newest: bool = True) -> list[dict]:
        """Only replies the customer gets (queued, sent, delivered) count."""
        message_filter = {"conversation_id": conversation_id, "received_at__gte": start}
        reply_filter = {"conversation_id": conversation_id, "created_at__gte": start}
        if end is not None:
            message_filter["received_at__lt"] = end
            reply_filter["created_at__lt"] = end
        direction = "-" if newest else ""
        messages = list(
            Message.objects.filter(**message_filter)
            .order_by(f"{direction}received_at", f"{direction}id")
            .values("sender", "content", "received_at")[:limit]
        )
        replies = list(
            Reply.objects.filter(**reply_filter, status__in=[*Reply.OUTBOX, Reply.Status.DELIVERED])
            .order_by(f"{direction}created_at", f"{direction}id")
            .values("content", "created_at")[:limit]
        )
        turns = [
            (row["received_at"], 0, {"role": "user", "content": row["content"], "name": row["sender"]})
            for row in messages
        ]
        turns += [(row["created_at"], 1, {"role": "assistant", "content": row["content"]}) for row in replies]
        turns.sort(key=lambda turn: turn[:2])
        ordered = [{**turn, "at": at} for at, _, turn in turns]
        return ordered[-limit:] if newest else ordered[:limit]

    def has_turns_between(self, conversation_id: int, start, end) -> bool:
        span = {"received_at__lt": end} if start is None else {"received_at__gte": start, "received_at__lt": end}
        return Message.objects.filter(conversation_id=conversation_id, **span).exists()


def register() -> None:
    register_history(MessageHistory())
