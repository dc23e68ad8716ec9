"""The rules engine: `evaluate(facts, dry_run=False) -> RuleDecision` (types in `types.py`).

Order of evaluation for one message:
1. admin commands (`#mute [minutes]`, `#unmute`, `#status`) from a configured admin nickname;
2. a muted chat → ignore;
3. rules by priority (smaller first, then id). Every matching rule adds its tags; the first matching
   rule whose action is not "tag" sets the decision (reply / ignore / handoff / route); evaluation
   ends at the first matching rule with "stop here". No decisive rule → action "none" (the engine
   answers), with whatever tags matched;
4. rate limits (Redis counters, fixed windows), for messages not ignored by then (a group message
   without @ does not use up the group's quota): over a limit → that limit's action (default ignore).

Rules, limits, admin nicknames and mutes are compiled into one immutable `RuleSet` per process,
rebuilt when the Redis key `rules:version` changes (checked at most once per `RULES_VERSION_CHECK_MS`;
changes made in this process are seen at once). Given the same facts and rule set (and counters),
the decision is the same: reply templates are chosen by a hash of the message, not at random.
Time windows and weekdays are read in `RULES_TIMEZONE` (default Asia/Shanghai).

`dry_run=True` (the admin preview) neither counts towards rate limits nor applies admin commands.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from .models import ANY, AdminNickname, ChatMute, RateLimit, Rule, split_list, split_list_lines
from .types import MessageFacts, RuleDecision

logger = logging.getLogger(__name__)

VERSION_KEY = "rules:version"
WEEKDAYS = "一二三四五六日"


def check_interval_ms() -> float:
    return settings.RULES_VERSION_CHECK_MS


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
        add = compiled._add
        if rule.chat_type != ANY:
            add(
                lambda c, t=rule.chat_type: (
                    None if c.facts.chat_type == t else f"会话类型是{_chat_type(c.facts.chat_type)}"
                ),
                f"会话类型={_chat_type(rule.chat_type)}",
            )
        if rule.at_me != ANY:
            want = rule.at_me == "yes"
            add(
                lambda c, w=want: None if bool(c.facts.is_at_me) == w else ("没有@我" if w else "@了我"),
                "@了我" if want else "没有@我",
            )
        names = split_list(rule.chat_names)
        if names:
            match = _glob(names)
            add(
                lambda c: None if match(c.facts.chat_name) else f"会话「{c.facts.chat_name}」不在列表中",
                f"会话名匹配 {'/'.join(names)}",
            )
        senders = split_list(rule.senders)
        if senders:
            match_sender = _glob(senders)
            add(
                lambda c: None if match_sender(c.facts.sender) else f"发送者「{c.facts.sender}」不在列表中",
                f"发送者匹配 {'/'.join(senders)}",
            )
        if rule.weekdays:
            days = {int(d) for d in rule.weekdays}
            add(
                lambda c: None if c.local.isoweekday() in days else f"今天是周{WEEKDAYS[c.local.isoweekday() - 1]}",
                "星期 " + "".join(WEEKDAYS[d - 1] for d in sorted(days)),
            )
        if rule.time_start and rule.time_end:
            start, end = rule.time_start, rule.time_end
            add(
                lambda c: None if _in_window(c.local.time(), start, end) else f"{c.local:%H:%M} 不在时间段内",
                f"时间 {start:%H:%M}–{end:%H:%M}",
            )
        if rule.max_length:
            limit = rule.max_length
            add(
                lambda c: None if len(c.text) <= limit else f"消息 {len(c.text)} 字，超过 {limit} 字",
                f"不超过 {limit} 字",
            )
        keywords = [k.lower() for k in split_list(rule.keywords)]
        if keywords:
            if rule.keyword_mode == "all":
                add(lambda c: _all_keywords(c, keywords), "包含全部关键词 " + "/".join(keywords))
            else:
                add(lambda c: _any_keyword(c, keywords), "包含关键词")
        if rule.regex:
            pattern = re.compile(rule.regex, re.IGNORECASE)
            add(
                lambda c: None if pattern.search((c.facts.content or "").strip()) else "正则不匹配",
                f"正则 {rule.regex}",
            )
        return compiled

    def _add(self, check, description: str) -> None:
        self.checks.append(check)
        self.describe.append(description)

    def why_not(self, ctx: Context) -> str | None:
        for check in self.checks:
            reason = check(ctx)
            if reason is not None:
                return reason
        return None


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


class _State:
    ruleset: RuleSet | None = None
    checked_at: float = 0.0
    dirty: bool = True


_state = _State()
_lock = threading.Lock()


def bump_version() -> None:
    """Rules, limits, admins or mutes changed: recompile here now, in other processes after commit."""
    _state.dirty = True
    transaction.on_commit(_publish)


def _publish() -> None:
    _state.dirty = True
    try:
        cache.set(VERSION_KEY, uuid.uuid4().hex, timeout=None)
    except Exception:
        logger.warning("could not publish the rules version", exc_info=True)


def get_ruleset(force: bool = False) -> RuleSet:
    current = _state.ruleset
    if (
        not force
        and current is not None
        and not _state.dirty
        and (time.monotonic() - _state.checked_at) * 1000 < check_interval_ms()
    ):
        return current
    with _lock:
        current = _state.ruleset
        try:
            version = cache.get(VERSION_KEY)
            if version is None:
                cache.add(VERSION_KEY, uuid.uuid4().hex, timeout=None)
                version = cache.get(VERSION_KEY)
        except Exception:
            logger.warning("rules version check failed", exc_info=True)
            version = current.version if current is not None else "unknown"
        _state.checked_at = time.monotonic()
        if force or current is None or _state.dirty or version != current.version:
            _state.dirty = False
            _state.ruleset = compile_ruleset(version)
        return _state.ruleset


def reset() -> None:
    with _lock:
        _state.ruleset = None
        _state.dirty = True


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


def evaluate(facts: MessageFacts, *, dry_run: bool = False) -> RuleDecision:
    ruleset = get_ruleset()
    ctx = Context(facts=facts, text=(facts.content or "").strip().lower(), local=_local(facts.received_at))
    trace: list[dict] = []

    command = _admin_command(ruleset, ctx, trace, dry_run)
    if command is not None:
        command.trace = trace
        return command

    mute = ruleset.mutes.get((facts.agent_id, facts.chat_name))
    if mute is not None and (mute[1] is None or mute[1] > timezone.now()):
        until = f"，至 {_local(mute[1]):%m-%d %H:%M}" if mute[1] else ""
        trace.append({"step": "mute", "matched": True, "why": f"会话已被 {mute[0] or '管理员'} 静音{until}"})
        return RuleDecision(action="ignore", reason=f"会话已静音{until}", trace=trace, tags=["muted"])
    trace.append({"step": "mute", "matched": False, "why": "会话未静音"})

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
    if decision.action != "ignore":
        # Only messages we would act on count towards (and are held back by) the rate limits.
        limited = _rate_limits(ruleset, ctx, trace, dry_run)
        if limited is not None:
            limited.tags = decision.tags + limited.tags
            limited.trace = trace
            return limited
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
    return f"rules:rl:{limit.id}:{zlib.crc32(subject.encode()):08x}:{len(subject)}:{bucket}"


def _redis():
    """The cache's raw Redis client (django-redis), or None on other cache backends."""
    try:
        from django_redis import get_redis_connection

        return get_redis_connection("default")
    except Exception:
        return None


def _count(keys: list[tuple[str, int]], dry_run: bool) -> list[int]:
    """This message's position in each fixed window (one pipelined round trip on Redis)."""
    client = _redis()
    if client is not None:
        names = [f"{settings.CACHE_KEY_PREFIX}:{key}" for key, _ in keys]
        if dry_run:
            return [int(v or 0) + 1 for v in client.mget(names)]
        pipe = client.pipeline(transaction=False)
        for name, (_, ttl) in zip(names, keys, strict=True):
            pipe.incr(name)
            pipe.expire(name, ttl)
        return [int(v) for v in pipe.execute()[0::2]]
    counts = []
    for key, ttl in keys:
        if dry_run:
            counts.append((cache.get(key) or 0) + 1)
        else:
            cache.add(key, 0, timeout=ttl)
            counts.append(cache.incr(key))
    return counts


def _rate_limits(ruleset: RuleSet, ctx: Context, trace: list, dry_run: bool) -> RuleDecision | None:
    now = ctx.local.timestamp()
    applicable = [(lim, key) for lim in ruleset.limits if (key := _limit_key(lim, ctx.facts, now)) is not None]
    if not applicable:
        return None
    try:
        counts = _count([(key, lim.window + 5) for lim, key in applicable], dry_run)
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


def _admin_command(ruleset: RuleSet, ctx: Context, trace: list, dry_run: bool) -> RuleDecision | None:
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
            ChatMute.objects.update_or_create(
                agent_id=facts.agent_id, chat_name=facts.chat_name, defaults={"muted_by": facts.sender, "until": until}
            )
        decision.reply = "已静音，本会话暂停自动回复" + (
            f"，至 {_local(until):%H:%M}" if until else "，发送 #unmute 恢复"
        )
    elif command == "unmute":
        if not dry_run:
            ChatMute.objects.filter(agent_id=facts.agent_id, chat_name=facts.chat_name).delete()
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
