"""The one place where engines reach into other apps (knowledge, customers, ERP, the message pipeline).

Each call is guarded: an app that fails at runtime makes the engine answer with less context, never
fail the reply. The interfaces are the agreed ones in ../shared/ARCHITECTURE.md."""

import logging
from dataclasses import dataclass

from django.db.models import Subquery

from apps.customers import services as customers
from apps.erp import services as erp
from apps.knowledge import services as knowledge
from apps.llm_gateway import config as gateway_config
from apps.messages.models import Conversation, Message, Reply

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnowledgeHit:
    entry_id: int | None
    title: str
    answer: str
    score: float
    document: str = ""
    version: str = ""
    section: str = ""

    def citation(self) -> dict:
        return {
            "entry_id": self.entry_id,
            "title": self.title,
            "document": self.document,
            "version": self.version,
            "section": self.section,
            "score": round(self.score, 4),
        }


def _as_hit(hit) -> KnowledgeHit:
    return KnowledgeHit(
        entry_id=getattr(hit, "entry_id", None),
        title=str(getattr(hit, "title", "") or ""),
        answer=str(getattr(hit, "answer", "") or ""),
        score=float(getattr(hit, "score", 0.0) or 0.0),
        document=str(getattr(hit, "document", "") or ""),
        version=str(getattr(hit, "version", "") or ""),
        section=str(getattr(hit, "section", "") or ""),
    )


async def knowledge_search(query: str, k: int) -> list[KnowledgeHit]:
    """The knowledge base's hits for `query`, best first; [] when the search fails."""
    if not query.strip():
        return []
    try:
        result = await knowledge.asearch(query, k=k)
    except Exception:
        logger.exception("knowledge search failed; answering without knowledge")
        return []
    return [_as_hit(hit) for hit in result.hits]


@dataclass(frozen=True)
class ConversationRef:
    id: int
    agent_id: str
    chat_name: str
    chat_type: str
    personality_id: int | None


def conversation(conversation_id: int) -> ConversationRef | None:
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
        chat_type=row.get("chat_type") or "private",
        personality_id=row.get("personality_id"),
    )


def conversation_id_for(agent_id: str, chat_name: str) -> int | None:
    return Conversation.objects.filter(agent_id=agent_id, chat_name=chat_name).values_list("id", flat=True).first()


def contact_facts(conversation_id: int, contact: str, limit: int = 200) -> list[str]:
    """Long-term facts about `contact` in this conversation's chat, newest first (one query)."""
    from apps.engines.models import ContactFact

    chat = Conversation.objects.filter(pk=conversation_id)
    return list(
        ContactFact.objects.filter(
            agent_id=Subquery(chat.values("agent_id")[:1]),
            chat_name=Subquery(chat.values("chat_name")[:1]),
            contact=contact,
        ).values_list("fact", flat=True)[:limit]
    )


def set_conversation_engine_override(conversation_id: int, engine: str) -> bool:
    """Per-chat override lives on the pipeline's Conversation.engine_override; True when a row changed."""
    return Conversation.objects.filter(pk=conversation_id).update(engine_override=engine) == 1


def bound_customer(agent_id: str, chat_name: str, sender: str):
    """The ERP customer bound to this chat/sender, or None (no binding, or the lookup failed)."""
    try:
        return customers.bound_customer(agent_id, chat_name, sender)
    except Exception:
        logger.exception("bound_customer failed; answering without the customer's profile")
        return None


def contracts_for(customer_id: int) -> list[dict]:
    return erp.contracts_for(customer_id)


def contract_detail(customer_id: int, contract_id) -> dict | None:
    """None when the contract is not this customer's."""
    return erp.contract_detail(customer_id, contract_id)


def latest_sender(conversation_id: int) -> str:
    """Who wrote the conversation's latest message (callers that pass no `name`)."""
    return (
        Message.objects.filter(conversation_id=conversation_id)
        .order_by("-received_at", "-id")
        .values_list("sender", flat=True)
        .first()
        or ""
    )


def turns_between(conversation_id: int, start, end=None, *, limit: int, newest: bool = True) -> list[dict]:
    """The conversation's customer messages and our replies in [start, end), oldest first, as
    {"role", "content", "name", "at"}: the `limit` newest ones (or oldest, `newest=False`). Only replies
    the customer gets (queued, sent, delivered) count."""
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
        {"role": "user", "content": row["content"], "name": row["sender"], "at": row["received_at"], "order": 0}
        for row in messages
    ] + [{"role": "assistant", "content": row["content"], "at": row["created_at"], "order": 1} for row in replies]
    turns.sort(key=lambda turn: (turn["at"], turn["order"]))
    for turn in turns:
        del turn["order"]
    return turns[-limit:] if newest else turns[:limit]


def has_turns_between(conversation_id: int, start, end) -> bool:
    span = {"received_at__lt": end} if start is None else {"received_at__gte": start, "received_at__lt": end}
    return Message.objects.filter(conversation_id=conversation_id, **span).exists()


def gateway_route(route: str) -> dict | None:
    """{"api_base", "api_key", "model"} of the first entry of a gateway route, or None."""
    try:
        entries = gateway_config.get_sync().routes.get(route) or []
    except Exception:
        logger.exception("could not read the gateway configuration")
        return None
    if not entries:
        return None
    entry = entries[0]
    return {"api_base": entry.provider.api_base, "api_key": entry.provider.api_key, "model": entry.model}
