"""The rules engine: `await evaluate(facts, dry_run=False) -> RuleDecision` (types in `types.py`).

Order of evaluation for one message:
1. admin commands (`#mute [minutes]`, `#unmute`, `#status`) from a configured admin nickname;
2. a muted chat → ignore;
3. rules by priority (smaller first, then id). Every matching rule adds its tags; the first matching
   rule whose action is not "tag" sets the decision (reply / ignore / handoff / route); evaluation
   ends at the first matching rule with "stop here". No decisive rule → action "none" (the engine
   answers), with whatever tags matched;
4. rate limits (Redis counters, fixed windows, counted by one script call per message that goes out in
   the event-loop turn's pipeline), for messages not ignored by then (a group message without @ does
   not use up the group's quota): over a limit → that limit's action (default ignore).

Rules, limits, admin nicknames and mutes are compiled into one immutable `RuleSet` per process, kept
in the versioned cache `RULES` (apps.core.cache): the services below that write them bump it, and
every process checks its Redis version at most every RULES_VERSION_CHECK_MS. Given the same facts and
rule set (and counters), the decision is the same: reply templates are chosen by a hash of the
message, not at random. Time windows and weekdays are read in `RULES_TIMEZONE` (Asia/Shanghai).

`dry_run=True` (the admin preview) neither counts towards rate limits nor applies admin commands.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.core import redis
from apps.core.cache import VersionedCache
from apps.core.db import run_db

from .models import ANY, AdminNickname, ChatMute, RateLimit, Rule, split_list, split_list_lines
from .types import MessageFacts, RuleDecision

logger = logging.getLogger(__name__)

WEEKDAYS = "一二三四五六日"


def tz() -> ZoneInfo:
    return ZoneInfo(settings.RULES_TIMEZONE)


# --- compiled rules -----------------------------------------------------------------------------
@dataclass
class Context:
    facts: MessageFacts
    text: str  # lower-cased, stripped content
    local: datetime
    keyword: str = ""  # the keyword that matched, for templates


def _glob(patterns: list[str]):
    compiled = [re.compile(fnmatch.translate(p)) for p in patterns]
    return lambda value: any(c.match(value or "") for c in compiled)


@dataclass
class CompiledRule:
    id: int
    name: str
    priority: int
    stop: bool
    action: str
    templates: list[str]
    handoff_reason: str
    personality_id: int | None
    engine: str
    tags: list[str]
    checks: list = field(default_factory=list)  # [(callable(ctx) -> str | None: None = holds, else why not)]
    describe: list[str] = field(default_factory=list)  # what holds when all checks pass

    @classmethod
    def build(cls, rule: Rule) -> CompiledRule:
        compiled = cls(
            id=rule.id,
            name=rule.name,
            priority=rule.priority,
            stop=rule.stop,
            action=rule.action,
            templates=split_list_lines(rule.reply_templates),
            handoff_reason=rule.handoff_reason,
            personality_id=rule.personality_id,
            engine=rule.engine,
            tags=split_list(rule.tags),
        )
        for check, description in (*_chat_checks(rule), *_time_checks(rule), *_content_checks(rule)):
            compiled.checks.append(check)
            compiled.describe.append(description)
        return compiled

    def why_not(self, ctx: Context) -> str | None:
        for check in self.checks:
            reason = check(ctx)
            if reason is not None:
                return reason
        return None


def _chat_checks(rule: Rule) -> list[tuple]:
    """Who and where: chat type, @ me, chat names, senders."""
    checks = []
    if rule.chat_type != ANY:
        want_type = rule.chat_type
        checks.append(
            (
                lambda c: None if c.facts.chat_type == want_type else f"会话类型是{_chat_type(c.facts.chat_type)}",
                f"会话类型={_chat_type(want_type)}",
            )
        )
    if rule.at_me != ANY:
        want = rule.at_me == "yes"
        checks.append(
            (
                lambda c: None if bool(c.facts.is_at_me) == want else ("没有@我" if want else "@了我"),
                "@了我" if want else "没有@我",
            )
        )
    names = split_list(rule.chat_names)
    if names:
        match_chat = _glob(names)
        checks.append(
            (
                lambda c: None if match_chat(c.facts.chat_name) else f"会话「{c.facts.chat_name}」不在列表中",
                f"会话名匹配 {'/'.join(names)}",
            )
        )
    senders = split_list(rule.senders)
    if senders:
        match_sender = _glob(senders)
        checks.append(
            (
                lambda c: None if match_sender(c.facts.sender) else f"发送者「{c.facts.sender}」不在列表中",
                f"发送者匹配 {'/'.join(senders)}",
            )
        )
    return checks


def _time_checks(rule: Rule) -> list[tuple]:
    """When: weekdays and a time window (which may span midnight), in RULES_TIMEZONE."""
    checks = []
    if rule.weekdays:
        days = {int(d) for d in rule.weekdays}
        checks.append(
            (
                lambda c: None if c.local.isoweekday() in days else f"今天是周{WEEKDAYS[c.local.isoweekday() - 1]}",
                "星期 " + "".join(WEEKDAYS[d - 1] for d in sorted(days)),
            )
        )
    if rule.time_start and rule.time_end:
        start, end = rule.time_start, rule.time_end
        checks.append(
            (
                lambda c: None if _in_window(c.local.time(), start, end) else f"{c.local:%H:%M} 不在时间段内",
                f"时间 {start:%H:%M}–{end:%H:%M}",
            )
        )
    return checks


def _content_checks(rule: Rule) -> list[tuple]:
    """What: length, keywords (any / all), regex."""
    checks = []
    if rule.max_length:
        limit = rule.max_length
        checks.append(
            (
                lambda c: None if len(c.text) <= limit else f"消息 {len(c.text)} 字，超过 {limit} 字",
                f"不超过 {limit} 字",
            )
        )
    keywords = [k.lower() for k in split_list(rule.keywords)]
    if keywords and rule.keyword_mode == "all":
        checks.append((lambda c: _all_keywords(c, keywords), "包含全部关键词 " + "/".join(keywords)))
    elif keywords:
        checks.append((lambda c: _any_keyword(c, keywords), "包含关键词"))
    if rule.regex:
        pattern = re.compile(rule.regex, re.IGNORECASE)
        checks.append(
            (
                lambda c: None if pattern.search((c.facts.content or "").strip()) else "正则不匹配",
                f"正则 {rule.regex}",
            )
        )
    return checks


def _chat_type(value: str) -> str:
    return {"private": "私聊", "group": "群聊"}.get(value, value)


def _in_window(now: dtime, start: dtime, end: dtime) -> bool:
    if start <= end:
        return start <= now < end
    return now >= start or now < end  # across midnight


def _any_keyword(ctx: Context, keywords: list[str]) -> str | None:
    for keyword in keywords:
        if keyword in ctx.text:
            ctx.keyword = keyword
            return None
    return "不含关键词"


def _all_keywords(ctx: Context, keywords: list[str]) -> str | None:
    missing = [k for k in keywords if k not in ctx.text]
    if missing:
        return "缺少关键词 " + "/".join(missing)
    ctx.keyword = keywords[0]
    return None


@dataclass(frozen=True)
class CompiledLimit:
    id: int
    name: str
    scope: str
    applies_to: str
    limit: int
    window: int
    action: str
    reply_text: str


@dataclass
class RuleSet:
    version: str
    rules: list[CompiledRule]
    limits: list[CompiledLimit]
    admins: frozenset[str]
    mutes: dict[tuple[str, str], tuple[str, datetime | None]]  # (agent, chat) → (by, until)


def compile_ruleset(version: str = "") -> RuleSet:
    rules = [CompiledRule.build(r) for r in Rule.objects.filter(enabled=True).order_by("priority", "id")]
    limits = [
        CompiledLimit(
            lim.id, lim.name, lim.scope, lim.applies_to, lim.limit, lim.window_seconds, lim.action, lim.reply_text
        )
        for lim in RateLimit.objects.filter(enabled=True).order_by("id")
    ]
    admins = set(settings.RULES_ADMIN_NICKNAMES)
    admins.update(AdminNickname.objects.filter(enabled=True).values_list("nickname", flat=True))
    mutes = {(m.agent_id, m.chat_name): (m.muted_by, m.until) for m in ChatMute.objects.all()}
    return RuleSet(version=version, rules=rules, limits=limits, admins=frozenset(admins), mutes=mutes)


RULES: VersionedCache[RuleSet] = VersionedCache(
    "rules", load=compile_ruleset, check_seconds=lambda: settings.RULES_VERSION_CHECK_MS / 1000
)


# --- writes (each one bumps RULES) -------------------------------------------------------------------
def save_rule_config(obj: Rule | RateLimit | AdminNickname | ChatMute) -> None:
    """Save a rule, rate limit, admin nickname or mute (admin); every process recompiles."""
    with transaction.atomic():
        obj.save()
        RULES.bump()


def delete_rule_config(target) -> None:
    """Delete a rule, rate limit, admin nickname or mute, or a queryset of them (admin)."""
    with transaction.atomic():
        target.delete()
        RULES.bump()


def mute_chat(agent_id: str, chat_name: str, muted_by: str, until: datetime | None) -> None:
    with transaction.atomic():
        ChatMute.objects.update_or_create(
            agent_id=agent_id, chat_name=chat_name, defaults={"muted_by": muted_by, "until": until}
        )
        RULES.bump()


def unmute_chat(agent_id: str, chat_name: str) -> None:
    with transaction.atomic():
        ChatMute.objects.filter(agent_id=agent_id, chat_name=chat_name).delete()
        RULES.bump()


# --- evaluation ---------------------------------------------------------------------------------------
class _Vars(dict):
    def __missing__(self, key):
        return "{" + key + "}"


def render(template: str, ctx: Context) -> str:
    f = ctx.facts
    values = _Vars(
        sender=f.sender,
        chat_name=f.chat_name,
        time=f"{ctx.local:%H:%M}",
        date=f"{ctx.local:%Y-%m-%d}",
        weekday="周" + WEEKDAYS[ctx.local.isoweekday() - 1],
        keyword=ctx.keyword,
    )
    try:
        return template.format_map(values)
    except (ValueError, IndexError):  # a stray brace in the template: send it as written
        return template


def pick_template(templates: list[str], facts: MessageFacts) -> str:
    """Deterministic choice: the same message gets the same template."""
    key = f"{facts.chat_name}|{facts.sender}|{facts.content}".encode()
    return templates[zlib.crc32(key) % len(templates)]


def _local(received_at: datetime | None) -> datetime:
    when = received_at or timezone.now()
    if timezone.is_naive(when):
        when = timezone.make_aware(when, tz())
    return when.astimezone(tz())


async def evaluate(facts: MessageFacts, *, dry_run: bool = False) -> RuleDecision:
    ruleset = await RULES.get()
    ctx = Context(facts=facts, text=(facts.content or "").strip().lower(), local=_local(facts.received_at))
    trace: list[dict] = []

    command = await _admin_command(ruleset, ctx, trace, dry_run)
    if command is not None:
        command.trace = trace
        return command

    mute = ruleset.mutes.get((facts.agent_id, facts.chat_name))
    if mute is not None and (mute[1] is None or mute[1] > timezone.now()):
        until = f"，至 {_local(mute[1]):%m-%d %H:%M}" if mute[1] else ""
        trace.append({"step": "mute", "matched": True, "why": f"会话已被 {mute[0] or '管理员'} 静音{until}"})
        return RuleDecision(action="ignore", reason=f"会话已静音{until}", trace=trace, tags=["muted"])
    trace.append({"step": "mute", "matched": False, "why": "会话未静音"})

    decision = _match_rules(ruleset, ctx, trace)
    if decision.action != "ignore":
        # Only messages we would act on count towards (and are held back by) the rate limits.
        limited = await _rate_limits(ruleset, ctx, trace, dry_run)
        if limited is not None:
            limited.tags = decision.tags + limited.tags
            limited.trace = trace
            return limited
    return decision


def _match_rules(ruleset: RuleSet, ctx: Context, trace: list[dict]) -> RuleDecision:
    decision = RuleDecision(action="none", reason="没有规则命中", trace=trace)
    decided = False
    for rule in ruleset.rules:
        why = rule.why_not(ctx)
        entry = {
            "step": "rule",
            "rule_id": rule.id,
            "rule": rule.name,
            "priority": rule.priority,
            "action": rule.action,
            "matched": why is None,
            "why": why if why is not None else "；".join(rule.describe) or "无条件",
        }
        trace.append(entry)
        if why is not None:
            continue
        for tag in rule.tags:
            if tag not in decision.tags:
                decision.tags.append(tag)
        if rule.action != "tag" and not decided:
            decided = True
            _apply(decision, rule, ctx)
        elif rule.action != "tag":
            entry["note"] = "已由前面的规则决定动作，仅追加标签"
        if rule.stop:
            entry["note"] = (entry.get("note", "") + " 到此为止").strip()
            break
    return decision


def _apply(decision: RuleDecision, rule: CompiledRule, ctx: Context) -> None:
    decision.action = rule.action
    decision.rule_id = rule.id
    decision.rule_name = rule.name
    detail = "；".join(rule.describe) or "无条件"
    if ctx.keyword:
        detail += f"（命中「{ctx.keyword}」）"
    decision.reason = f"规则「{rule.name}」：{detail}"
    if rule.action == "reply":
        decision.reply = render(pick_template(rule.templates, ctx.facts), ctx) if rule.templates else ""
    elif rule.action == "handoff":
        decision.reason = render(rule.handoff_reason, ctx) if rule.handoff_reason else decision.reason
    elif rule.action == "route":
        decision.personality_id = rule.personality_id
        decision.engine = rule.engine


# --- rate limits ------------------------------------------------------------------------------------------
def _limit_key(limit: CompiledLimit, facts: MessageFacts, now: float) -> str | None:
    if limit.applies_to != ANY and facts.chat_type != limit.applies_to:
        return None
    if limit.scope == "group":
        if facts.chat_type != "group":
            return None
        subject = f"{facts.agent_id}|{facts.chat_name}"
    else:
        subject = f"{facts.agent_id}|{facts.chat_name}|{facts.sender}"
    bucket = int(now // limit.window)
    return redis.key("rules", "rl", limit.id, f"{zlib.crc32(subject.encode()):08x}", len(subject), bucket)


# Counts this message in each of its windows: one script call (atomic, one command in the loop turn's
# pipeline) instead of an INCR and an EXPIRE per limit.
_COUNT_SCRIPT = """
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('INCR', key)
  if counts[i] == 1 then redis.call('EXPIRE', key, ARGV[i]) end
end
return counts
"""


async def _count(keys: list[tuple[str, int]], dry_run: bool) -> list[int]:
    """This message's position in each fixed window (a dry run only reads the counters)."""
    names = [key for key, _ in keys]
    if dry_run:
        return [int(value or 0) + 1 for value in await redis.batched("MGET", *names)]
    return [int(count) for count in await redis.script(_COUNT_SCRIPT, names, [ttl for _, ttl in keys])]


async def _rate_limits(ruleset: RuleSet, ctx: Context, trace: list, dry_run: bool) -> RuleDecision | None:
    now = ctx.local.timestamp()
    applicable = [(lim, key) for lim in ruleset.limits if (key := _limit_key(lim, ctx.facts, now)) is not None]
    if not applicable:
        return None
    try:
        counts = await _count([(key, lim.window + 5) for lim, key in applicable], dry_run)
    except Exception:  # Redis down: do not block replies on a counter
        logger.warning("rate-limit counters unavailable", exc_info=True)
        return None
    for (limit, _), count in zip(applicable, counts, strict=True):
        over = count > limit.limit
        trace.append(
            {
                "step": "rate_limit",
                "limit": limit.name,
                "matched": over,
                "why": f"本窗口第 {count} 条，上限 {limit.limit} 条 / {limit.window} 秒"
                + ("（预览不计数）" if dry_run else ""),
            }
        )
        if over:
            reason = f"限流「{limit.name}」：超过 {limit.limit} 条 / {limit.window} 秒"
            if limit.action == "reply":
                reply = render(limit.reply_text, ctx) if limit.reply_text else ""
                return RuleDecision(action="reply", reply=reply, reason=reason, tags=["rate_limited"])
            return RuleDecision(action=limit.action, reason=reason, tags=["rate_limited"])
    return None


# --- admin commands --------------------------------------------------------------------------------------
_COMMAND = re.compile(r"^#(mute|unmute|status)(?:\s+(\d+))?\s*$", re.IGNORECASE)


async def _admin_command(ruleset: RuleSet, ctx: Context, trace: list, dry_run: bool) -> RuleDecision | None:
    match = _COMMAND.match(ctx.text)
    if not match:
        return None
    facts = ctx.facts
    if facts.sender not in ruleset.admins:
        trace.append(
            {"step": "admin_command", "matched": False, "why": f"「{facts.sender}」不是管理员，按普通消息处理"}
        )
        return None
    command, minutes = match.group(1).lower(), match.group(2)
    trace.append(
        {
            "step": "admin_command",
            "matched": True,
            "why": f"管理员 {facts.sender} 发送 #{command}" + ("（预览不执行）" if dry_run else ""),
        }
    )
    decision = RuleDecision(action="reply", reason=f"管理员命令 #{command}", tags=["admin_command"])
    if command == "mute":
        until = timezone.now() + timedelta(minutes=int(minutes)) if minutes else None
        if not dry_run:
            await run_db(mute_chat, facts.agent_id, facts.chat_name, facts.sender, until)
        decision.reply = "已静音，本会话暂停自动回复" + (
            f"，至 {_local(until):%H:%M}" if until else "，发送 #unmute 恢复"
        )
    elif command == "unmute":
        if not dry_run:
            await run_db(unmute_chat, facts.agent_id, facts.chat_name)
        decision.reply = "已恢复自动回复"
    else:
        decision.reply = status_text(ruleset, facts)
    return decision


def status_text(ruleset: RuleSet, facts: MessageFacts) -> str:
    mute = ruleset.mutes.get((facts.agent_id, facts.chat_name))
    if mute is not None and (mute[1] is None or mute[1] > timezone.now()):
        state = "已静音" + (f"（至 {_local(mute[1]):%m-%d %H:%M}）" if mute[1] else "")
    else:
        state = "自动回复中"
    limits = "；".join(f"{lim.name} {lim.limit}条/{lim.window}秒" for lim in ruleset.limits) or "无"
    return f"状态：{state}\n启用规则：{len(ruleset.rules)} 条\n限流：{limits}"
