"""The one place where engines reach into the apps below them (knowledge, customers, ERP, the gateway's
configuration). Conversations come from above, through apps.engines.history.

Each call is guarded: an app that fails at runtime makes the engine answer with less context, never
fail the reply. The interfaces are the agreed ones in ../shared/ARCHITECTURE.md."""

import logging
from dataclasses import dataclass

from apps.customers import services as customers
from apps.erp import services as erp
from apps.knowledge import services as knowledge
from apps.llm_gateway import config as gateway_config

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
        entry_id=hit.entry_id,
        title=hit.title,
        answer=hit.answer,
        score=float(hit.score),
        document=hit.document,
        version=hit.version,
        section=hit.section,
    )


async def knowledge_search(query: str, k: int) -> list[KnowledgeHit]:
    """The knowledge base's hits for `query`, best first; [] when the search fails."""
    if not query.strip():
        return []
    try:
        result = await knowledge.search(query, k=k)
    except Exception:
        logger.exception("knowledge search failed; answering without knowledge")
        return []
    return [_as_hit(hit) for hit in result.hits]


def trusted_customer(agent_id: str, chat_name: str, sender: str, *, is_group: bool):
    """The ERP customer this chat/sender is trusted to be (a binding staff made or confirmed), or None
    (none, only a suggestion, or the lookup failed). The only source of the customer whose profile,
    contracts and ERP context a reply may use."""
    try:
        return customers.identify_contact(agent_id, chat_name, sender, is_group=is_group)
    except Exception:
        logger.exception("identify_contact failed; answering without the customer's profile")
        return None


def contracts_for(customer_id: int) -> list[dict]:
    return erp.contracts_for(customer_id)


def contract_detail(customer_id: int, contract_id) -> dict | None:
    """None when the contract is not this customer's."""
    return erp.contract_detail(customer_id, contract_id)


async def gateway_route(route: str) -> dict | None:
    """{"api_base", "api_key", "model"} of the first entry of a gateway route, or None."""
    try:
        entries = (await gateway_config.get()).routes.get(route) or []
    except Exception:
        logger.exception("could not read the gateway configuration")
        return None
    if not entries:
        return None
    entry = entries[0]
    return {"api_base": entry.provider.api_base, "api_key": entry.provider.api_key, "model": entry.model}
