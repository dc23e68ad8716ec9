"""Value types of the LLM gateway (interface in ../shared/ARCHITECTURE.md).

`apps.llm_gateway.services.complete(messages, *, route="default", tools=None, user=None, timeout=None)`
returns a Completion; `embed(texts, *, route="embedding")` returns Embeddings. Both are async.
"""

from dataclasses import dataclass, field


class GatewayError(Exception):
    """No configured model could answer (all attempts failed, circuits open, or budget blocked)."""


class EmbeddingUnavailable(GatewayError):
    """No embedding model answered; callers fall back to keyword retrieval."""


class NoEmbeddingModel(EmbeddingUnavailable):
    """The embedding route has no model at all (the embedded default): nothing to retry."""


class BudgetExceeded(GatewayError):
    """A budget refused the call and its policy is "block" (no answer) or "handoff" (hold the reply for a
    human). ("cheap" and "kb_only" degrade inside the gateway and are reported in Completion.budget_policy.)"""

    def __init__(self, message: str = "", *, policy: str = "block", budget: str = "", scope: str = ""):
        super().__init__(message or f"budget exhausted ({policy})")
        self.policy = policy
        self.budget = budget
        self.scope = scope


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the provider returned it


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class Attempt:
    provider: str
    model: str
    outcome: str  # "ok", "error", "timeout", "rate_limited", "circuit_open", "budget"
    latency_ms: float
    error: str = ""


@dataclass
class Completion:
    content: str
    provider: str
    model: str  # the model that actually answered
    usage: Usage = field(default_factory=Usage)
    tool_calls: list[ToolCall] = field(default_factory=list)
    cost: float = 0.0  # CNY
    latency_ms: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    offline: bool = False  # answered by the offline provider (no LLM)
    finish_reason: str = ""
    route: str = ""  # the route that answered ("cheap" after a budget degradation)
    budget_policy: str = ""  # "cheap" / "kb_only" when a budget degraded this call, else ""
    call_id: str = ""  # the usage record's key
    price_known: bool = True  # False: the model is not in the price table (charged the default price)
    offline_reason: str = ""  # "unavailable" / "no_provider" / "budget" when offline


@dataclass
class Embeddings:
    vectors: list[list[float]]
    provider: str
    model: str
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    latency_ms: float = 0.0
