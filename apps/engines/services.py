"""Entry points other apps and admin call (the engine manager has its own: apps.engines.manager)."""

from django.db import transaction

from apps.core import aio
from apps.engines.history import conversation_history
from apps.engines.manager import SWITCH, resolve_engine, switch_engine
from apps.engines.memory import invalidate_memory, remember_fact
from apps.engines.models import ContactFact, Personality

__all__ = [
    "delete_personality",
    "invalidate_memory",
    "remember_fact",
    "resolve_engine",
    "save_contact_fact",
    "save_personality",
    "switch_engine",
]


def save_personality(personality: Personality) -> Personality:
    """Save a personality; making it the default takes the flag from the previous default. Every
    process re-reads personalities' engines after the commit."""
    with transaction.atomic():
        if personality.is_default:
            Personality.objects.filter(is_default=True).exclude(pk=personality.pk).update(is_default=False)
        personality.save()
        SWITCH.bump()
    return personality


def delete_personality(personality: Personality) -> None:
    with transaction.atomic():
        personality.delete()
        SWITCH.bump()


def save_contact_fact(fact: ContactFact) -> ContactFact:
    """Save a fact entered in admin; the chat's cached memory is dropped so the next reply sees it.
    Sync (admin)."""
    fact.save()
    conversation_id = fact.conversation_id or conversation_history().conversation_id_for(fact.agent_id, fact.chat_name)
    if conversation_id:
        aio.run(invalidate_memory(conversation_id), timeout=10)
    return fact
