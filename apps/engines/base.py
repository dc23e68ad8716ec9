"""The engine interface (../shared/ARCHITECTURE.md). The message pipeline calls the active engine's
`generate_response`; the engine manager (apps.engines.manager) picks which one."""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass
class EngineReply:
    content: str
    confidence: float  # 0..1; below settings.REVIEW_CONFIDENCE_THRESHOLD the reply waits for review
    engine: str
    model: str = ""
    provider: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0  # CNY
    citations: list[dict] = field(default_factory=list)  # {"entry_id", "document", "version", "section", "score"}
    tool_calls: list[dict] = field(default_factory=list)  # {"name", "arguments", "ok"}
    latency_ms: dict[str, float] = field(default_factory=dict)  # "retrieval", "memory", "llm", "tools", "total"
    handoff: bool = False  # the engine asks for a human (tool call or policy)
    handoff_reason: str = ""
    offline: bool = False  # no LLM took part (offline provider / KB-only / apology)
    cache_hits: dict[str, int] = field(default_factory=dict)


class BaseEngine(ABC):
    name: str = "base"

    @abstractmethod
    async def generate_response(
        self,
        messages: list[dict],
        conversation_id: int,
        personality_id: int | None = None,
        use_tools: bool | None = None,
        stream: bool | None = None,
    ) -> EngineReply:
        """`messages` are OpenAI-style dicts; the last one is the customer's new message."""

    @abstractmethod
    async def get_engine_info(self) -> dict:
        """Name, version, models/routes used, capabilities — shown in admin."""

    @abstractmethod
    async def health_check(self) -> dict:
        """{"ok": bool, "detail": str}; a failing engine cannot be made active."""
