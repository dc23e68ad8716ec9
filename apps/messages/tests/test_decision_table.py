"""What becomes of a message, as a table: situation × rule verdict × engine reply → outcome (no I/O)."""

import pytest

from apps.engines.base import EngineReply
from apps.messages.decision import Policy, Situation, decide, needs_engine
from apps.rules.types import RuleDecision

POLICY = Policy(review_threshold=0.6, group_requires_at=True)
PRIVATE = Situation("private", is_at_me=False, taken_over=False)
GROUP = Situation("group", is_at_me=False, taken_over=False)
GROUP_AT = Situation("group", is_at_me=True, taken_over=False)
TAKEN = Situation("private", is_at_me=False, taken_over=True)

NO_RULE = RuleDecision()
ROUTE = RuleDecision(action="route", rule_id=3, rule_name="VIP", personality_id=2)
IGNORE = RuleDecision(action="ignore", reason="muted chat", rule_id=4, rule_name="静音")
FIXED = RuleDecision(action="reply", reply="您好，我们 9:00 上班。", rule_id=1, rule_name="问候")
HANDOFF = RuleDecision(action="handoff", reason="asked for a person", rule_id=2, rule_name="转人工")

SURE = EngineReply(content="充电桩质保两年。", confidence=0.9, engine="chat")
UNSURE = EngineReply(content="大概两年？", confidence=0.35, engine="chat")
WANTS_HUMAN = EngineReply(content="我帮您转人工。", confidence=0.9, engine="chat", handoff=True, handoff_reason="合同")

# situation, rule, engine reply → needs the engine?, action, status, source, content, review reason, handoff
TABLE = [
    (PRIVATE, NO_RULE, SURE, True, "reply", "queued", "engine", "充电桩质保两年。", "", ""),
    (PRIVATE, ROUTE, SURE, True, "reply", "queued", "engine", "充电桩质保两年。", "", ""),
    (
        PRIVATE,
        NO_RULE,
        UNSURE,
        True,
        "reply",
        "pending_review",
        "engine",
        "大概两年？",
        "low confidence 0.35",
        "low_confidence",
    ),
    (
        PRIVATE,
        NO_RULE,
        WANTS_HUMAN,
        True,
        "transfer_human",
        "pending_review",
        "engine",
        "我帮您转人工。",
        "engine handoff: 合同",
        "engine",
    ),
    (PRIVATE, FIXED, None, False, "reply", "queued", "rule", "您好，我们 9:00 上班。", "", ""),
    (PRIVATE, HANDOFF, None, False, "transfer_human", "pending_review", "rule", "", "handoff rule: 转人工", "rule"),
    (PRIVATE, IGNORE, None, False, "ignore", "skipped", "rule", "", "muted chat", ""),
    (GROUP, NO_RULE, None, False, "ignore", "skipped", "rule", "", "group message without @", ""),
    (GROUP, ROUTE, None, False, "ignore", "skipped", "rule", "", "group message without @", ""),
    (GROUP, FIXED, None, False, "reply", "queued", "rule", "您好，我们 9:00 上班。", "", ""),
    (GROUP, HANDOFF, None, False, "transfer_human", "pending_review", "rule", "", "handoff rule: 转人工", "rule"),
    (GROUP_AT, NO_RULE, SURE, True, "reply", "queued", "engine", "充电桩质保两年。", "", ""),
    (
        TAKEN,
        NO_RULE,
        SURE,
        True,
        "reply",
        "pending_review",
        "engine",
        "充电桩质保两年。",
        "conversation taken over",
        "taken_over",
    ),
    (
        TAKEN,
        FIXED,
        None,
        False,
        "reply",
        "pending_review",
        "rule",
        "您好，我们 9:00 上班。",
        "conversation taken over",
        "taken_over",
    ),
    (
        TAKEN,
        NO_RULE,
        UNSURE,
        True,
        "reply",
        "pending_review",
        "engine",
        "大概两年？",
        "low confidence 0.35",
        "low_confidence",
    ),
    (TAKEN, IGNORE, None, False, "ignore", "skipped", "rule", "", "muted chat", ""),
]


@pytest.mark.parametrize(
    ("situation", "rule", "engine", "engine_needed", "action", "status", "source", "content", "reason", "handoff"),
    TABLE,
)
def test_outcome(situation, rule, engine, engine_needed, action, status, source, content, reason, handoff):
    assert needs_engine(situation, rule, POLICY) is engine_needed
    outcome = decide(situation, rule, engine, POLICY)
    assert (outcome.action, outcome.status, outcome.source, outcome.content) == (action, status, source, content)
    assert (outcome.review_reason, outcome.handoff) == (reason, handoff)
    assert outcome.knowledge_gap is (handoff not in ("", "taken_over"))


def test_group_messages_are_answered_without_at_when_the_policy_says_so():
    everyone = Policy(review_threshold=0.6, group_requires_at=False)
    assert needs_engine(GROUP, NO_RULE, everyone)
    assert decide(GROUP, NO_RULE, SURE, everyone).status == "queued"


def test_the_threshold_is_the_boundary():
    at_threshold = EngineReply(content="好的", confidence=0.6, engine="chat")
    assert decide(PRIVATE, NO_RULE, at_threshold, POLICY).status == "queued"


def test_the_engine_reply_is_required_when_the_rules_leave_it_to_the_engine():
    with pytest.raises(ValueError, match="needs the engine"):
        decide(PRIVATE, NO_RULE, None, POLICY)
