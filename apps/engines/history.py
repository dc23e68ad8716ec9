"""What the engines need to know about a conversation, without importing the message pipeline.

The conversation, its messages and its replies belong to the messages app, which sits above the
engines. So the engines declare here the few reads (and the one write) they need, as the
`ConversationHistory` protocol, and the messages app registers its implementation when Django starts
(`apps.messages.history`, from its AppConfig.ready()).
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class ConversationRef:
    id: int
    agent_id: str
    chat_name: str
    chat_type: str
    personality_id: int | None


class ConversationHistory(Protocol):
    """Sync ORM reads (callers off the event loop run them with apps.core.db.run_db)."""

    def conversation(self, conversation_id: int) -> ConversationRef | None:
        """The conversation, or None when there is none with this id."""

    def conversation_id_for(self, agent_id: str, chat_name: str) -> int | None:
        """The id of the agent's conversation with this chat, if there is one."""

    def set_engine_override(self, conversation_id: int, engine: str) -> bool:
        """Make `engine` answer this chat ("" clears it); True when a conversation was changed."""

    def latest_sender(self, conversation_id: int) -> str:
        """Who wrote the conversation's latest message ("" when none)."""

    def turns_between(
        self, conversation_id: int, start: datetime, end: datetime | None = None, *, limit: int, newest: bool = True
    ) -> list[dict]:
        """The customer's messages and the replies the customer got in [start, end), oldest first, as
        {"role": "user" | "assistant", "content", "name" (user turns), "at"}: the `limit` newest ones
        (or the oldest, `newest=False`)."""

    def has_turns_between(self, conversation_id: int, start: datetime | None, end: datetime) -> bool:
        """Whether the customer wrote in [start, end) (from the beginning when `start` is None)."""


_history: ConversationHistory | None = None


def register_history(history: ConversationHistory) -> None:
    """Called once by the app that owns conversations (apps.messages) when Django starts."""
    global _history
    _history = history


def conversation_history() -> ConversationHistory:
    if _history is None:
        raise ImproperlyConfigured("no conversation history registered: apps.messages registers it in ready()")
    return _history
