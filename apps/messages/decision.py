"""What becomes of a message: a pure function of the message's situation, the rules' verdict and the engine's
reply. No I/O here; the pipeline gathers the inputs and stores the outcome. Tested as a table
(apps/messages/tests/test_decision_table.py).
"""

from dataclasses import dataclass, replace

from apps.engines.base import EngineReply
from apps.messages.models import Reply
from apps.rules.types import RuleDecision


@dataclass(frozen=True)
class Policy:
    review_threshold: float  # engine replies below this confidence wait for a supervisor
    group_requires_at: bool  # in a group only messages that @ the agent are answered


@dataclass(frozen=True)
class Situation:
    chat_type: str  # "private" | "group"
    is_at_me: bool
    taken_over: bool  # a human has the conversation: nothing is sent without review


@dataclass(frozen=True)
class Outcome:
    action: str  # Reply.Action
    status: str  # Reply.Status
    source: str  # Reply.Source
    confidence: float
    content: str = ""
    review_reason: str = ""
    handoff: str = ""  # why a human gets it (metrics label): rule | engine | low_confidence | taken_over; "" = none

    @property
    def knowledge_gap(self) -> bool:
        """The bot could not answer (not: a human simply has the conversation)."""
        return self.handoff not in ("", "taken_over")


def _silent(situation: Situation, rule: RuleDecision, policy: Policy) -> bool:
    unaddressed = situation.chat_type == "group" and not situation.is_at_me and policy.group_requires_at
    return rule.action == "ignore" or (unaddressed and rule.action in ("none", "route"))


def needs_engine(situation: Situation, rule: RuleDecision, policy: Policy) -> bool:
    return not _silent(situation, rule, policy) and rule.action in ("none", "route")


def decide(situation: Situation, rule: RuleDecision, engine_reply: EngineReply | None, policy: Policy) -> Outcome:
    if _silent(situation, rule, policy):
        reason = rule.reason if rule.action == "ignore" else "group message without @"
        return Outcome(Reply.Action.IGNORE, Reply.Status.SKIPPED, Reply.Source.RULE, 1.0, review_reason=reason)
    if rule.action == "handoff":
        return Outcome(
            Reply.Action.TRANSFER_HUMAN,
            Reply.Status.PENDING_REVIEW,
            Reply.Source.RULE,
            1.0,
            review_reason=f"handoff rule: {rule.rule_name or rule.reason}",
            handoff="rule",
        )
    if rule.action == "reply":
        answer = Outcome(Reply.Action.REPLY, Reply.Status.QUEUED, Reply.Source.RULE, 1.0, content=rule.reply)
    elif engine_reply is None:
        raise ValueError(f"rule action {rule.action!r} needs the engine's reply")
    else:
        answer = _engine_outcome(engine_reply, policy)
    if answer.status == Reply.Status.QUEUED and situation.taken_over:
        return _held(answer, "conversation taken over", "taken_over")
    return answer


def _engine_outcome(reply: EngineReply, policy: Policy) -> Outcome:
    answer = Outcome(
        Reply.Action.REPLY, Reply.Status.QUEUED, Reply.Source.ENGINE, float(reply.confidence), content=reply.content
    )
    if reply.handoff:
        held = _held(answer, f"engine handoff: {reply.handoff_reason}", "engine")
        return replace(held, action=Reply.Action.TRANSFER_HUMAN)
    if reply.confidence < policy.review_threshold:
        return _held(answer, f"low confidence {reply.confidence:.2f}", "low_confidence")
    return answer


def _held(answer: Outcome, reason: str, handoff: str) -> Outcome:
    """The same answer, waiting for a supervisor."""
    return replace(answer, status=Reply.Status.PENDING_REVIEW, review_reason=reason, handoff=handoff)
