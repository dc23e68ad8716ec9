"""What the rules engine reads and decides; built by the message pipeline."""

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class MessageFacts:
    agent_id: str
    chat_name: str
    chat_type: str  # "private" | "group"
    sender: str
    content: str
    is_at_me: bool
    received_at: datetime
    conversation_id: int | None = None


@dataclass
class RuleDecision:
    """The first matching rule's verdict. action: "reply" | "ignore" | "handoff" | "route" | "none"."""

    action: str = "none"
    reply: str = ""
    reason: str = ""
    rule_id: int | None = None
    rule_name: str = ""
    personality_id: int | None = None
    engine: str = ""
    tags: list[str] = field(default_factory=list)
    trace: list[dict] = field(default_factory=list)  # which rules were tried and why they did / did not match
