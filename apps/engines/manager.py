"""The engine manager: which engine answers a conversation, and switching it without a restart.

Resolution order: the chat's override (Conversation.engine_override, passed in by the pipeline) →
the personality's engine → the global active engine (EngineSetting) → "offline".

`resolve_engine` is on the hot path of every message, so each process keeps the switch state in
memory and checks a Redis version key at most every ENGINE_SWITCH_CHECK_SECONDS (0.2 s); a switch
bumps the key after its transaction commits, so every web and worker process sees it within that
interval plus one database read. With Redis down, processes re-read the database at the same
interval instead.
"""

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils.module_loading import import_string

from apps.core import aio
from apps.core.db import run_db
from apps.engines import adapters, metrics
from apps.engines.base import BaseEngine
from apps.engines.memory import redis_guard
from apps.engines.models import EngineName, EngineSetting, EngineSwitch, Personality

logger = logging.getLogger(__name__)

ENGINE_CLASSES = {
    EngineName.OFFLINE.value: "apps.engines.offline.OfflineEngine",
    EngineName.CHAT.value: "apps.engines.chat.ChatEngine",
    EngineName.MEM0.value: "apps.engines.mem0_engine.Mem0Engine",
}
VERSION_KEY = "engines:switch-version"


class EngineUnavailable(Exception):
    """No engine has this name."""


_instances: dict[str, BaseEngine] = {}
_instances_lock = threading.Lock()


def get_engine(name: str) -> BaseEngine:
    """The process-wide instance of engine `name` (engines keep clients and pools, so one each)."""
    engine = _instances.get(name)
    if engine is not None:
        return engine
    dotted = ENGINE_CLASSES.get(name)
    if dotted is None:
        raise EngineUnavailable(f"unknown engine {name!r}")
    with _instances_lock:
        if name not in _instances:
            _instances[name] = import_string(dotted)()
        return _instances[name]


@dataclass
class SwitchState:
    active: str
    by_personality: dict[int, str] = field(default_factory=dict)
    default_personality_engine: str = ""


def load_state() -> SwitchState:
    """The switch state from the database (two small queries)."""
    active = EngineSetting.objects.filter(pk=EngineSetting.SINGLETON_ID).values_list("active_engine", flat=True).first()
    by_personality, default_engine = {}, ""
    for pk, engine, is_default in Personality.objects.filter(active=True).values_list("id", "engine", "is_default"):
        if engine:
            by_personality[pk] = engine
        if is_default:
            default_engine = engine
    return SwitchState(active or settings.ENGINE_DEFAULT, by_personality, default_engine)


class _StateCache:
    """The in-process copy of the switch state, refreshed when the Redis version key changes."""

    def __init__(self):
        self.state: SwitchState | None = None
        self.version: str | None = None
        self.checked_at = 0.0

    def invalidate(self) -> None:
        self.state, self.version, self.checked_at = None, None, 0.0

    def _remote_version(self) -> str:
        """The current version, "" if Redis does not answer (then the database is re-read)."""

        def read() -> str:
            version = cache.get(VERSION_KEY)
            if version is None:
                version = uuid.uuid4().hex
                if not cache.add(VERSION_KEY, version, timeout=None):
                    version = cache.get(VERSION_KEY) or version
            return version

        return redis_guard.call(read, default="")

    async def current(self) -> SwitchState:
        now = time.monotonic()
        if self.state is not None and now - self.checked_at < settings.ENGINE_SWITCH_CHECK_SECONDS:
            return self.state
        self.checked_at = now
        version = self._remote_version()
        if self.state is None or not version or version != self.version:
            self.state = await run_db(load_state)
            self.version = version
        return self.state


_state_cache = _StateCache()


async def resolve_engine(conversation_id: int, personality_id: int | None = None, override: str = "") -> BaseEngine:
    """The engine that answers this conversation now. Cheap: no query unless a switch happened."""
    state = await _state_cache.current()
    personality_engine = (
        state.by_personality.get(personality_id, "") if personality_id else state.default_personality_engine
    )
    for name in (override, personality_engine, state.active):
        if not name:
            continue
        try:
            return get_engine(name)
        except EngineUnavailable:
            logger.warning("engine %r unavailable for conversation %s; trying the next one", name, conversation_id)
    return get_engine(EngineName.OFFLINE)


def bump_version() -> None:
    """Tell every process to re-read the switch state (after the current transaction commits)."""

    def bump():
        _state_cache.invalidate()
        if redis_guard.call(cache.set, VERSION_KEY, uuid.uuid4().hex, None, default=False) is False:
            logger.warning("could not publish the engine switch to Redis; processes re-read the database")

    transaction.on_commit(bump)


# --- health -------------------------------------------------------------------------------------
_health: dict[str, tuple[float, dict]] = {}


async def engine_health(name: str, *, fresh: bool = False) -> dict:
    """{"ok", "detail"} of engine `name`; cached for ENGINE_HEALTH_CACHE_SECONDS unless `fresh`."""
    cached = _health.get(name)
    if not fresh and cached and time.monotonic() - cached[0] < settings.ENGINE_HEALTH_CACHE_SECONDS:
        return cached[1]
    try:
        engine = get_engine(name)
        result = await asyncio.wait_for(engine.health_check(), timeout=30)
    except TimeoutError:
        result = {"ok": False, "detail": "健康检查超时（30 秒）"}
    except Exception as exc:  # a failing check must be shown, not crash the admin page
        result = {"ok": False, "detail": f"健康检查出错：{exc.__class__.__name__}: {exc}"}
    result = {"ok": bool(result.get("ok")), "detail": str(result.get("detail", ""))}
    _health[name] = (time.monotonic(), result)
    return result


async def engines_overview() -> list[dict]:
    """Every engine with its info and health (cached a few seconds), for admin."""
    state = await _state_cache.current()

    async def one(name: str) -> dict:
        try:
            info = await get_engine(name).get_engine_info()
        except EngineUnavailable as exc:
            info = {"name": name, "description": str(exc)}
        health = await engine_health(name)
        return {"name": name, "active": name == state.active, "info": info, "health": health}

    return list(await asyncio.gather(*(one(name) for name in ENGINE_CLASSES)))


# --- switching ------------------------------------------------------------------------------------
class SwitchRefused(Exception):
    """The switch was not made; the message says why, in Chinese, for the supervisor."""


def switch_engine(
    engine: str,
    *,
    personality_id: int | None = None,
    conversation_id: int | None = None,
    user=None,
) -> EngineSwitch:
    """Make `engine` answer globally, or for one personality, or for one chat. An empty `engine` with a
    personality or chat clears that override. Refuses an unknown engine or one whose health check
    fails (SwitchRefused); every attempt is recorded. Sync: call it from admin views or commands."""
    if personality_id is not None:
        scope, target = EngineSwitch.Scope.PERSONALITY, str(personality_id)
    elif conversation_id is not None:
        scope, target = EngineSwitch.Scope.CHAT, str(conversation_id)
    else:
        scope, target = EngineSwitch.Scope.GLOBAL, ""
    user = user if getattr(user, "is_authenticated", False) else None

    def refuse(detail: str):
        EngineSwitch.objects.create(scope=scope, target=target, engine=engine, accepted=False, detail=detail, user=user)
        metrics.SWITCHES.labels(scope, "refused").inc()
        raise SwitchRefused(detail)

    if engine and engine not in ENGINE_CLASSES:
        refuse(f"没有名为“{engine}”的引擎")
    if not engine and scope == EngineSwitch.Scope.GLOBAL:
        refuse("全局引擎不能为空")
    if engine:
        health = aio.run(engine_health(engine, fresh=True), timeout=40)
        if not health["ok"]:
            refuse(f"引擎“{engine}”健康检查未通过，未切换：{health['detail']}")

    if scope == EngineSwitch.Scope.PERSONALITY and not Personality.objects.filter(pk=personality_id).exists():
        refuse(f"人设 #{personality_id} 不存在")
    if scope == EngineSwitch.Scope.CHAT and adapters.conversation(conversation_id) is None:
        refuse(f"会话 #{conversation_id} 不存在")

    with transaction.atomic():
        if scope == EngineSwitch.Scope.GLOBAL:
            EngineSetting.objects.update_or_create(
                pk=EngineSetting.SINGLETON_ID, defaults={"active_engine": engine, "changed_by": user}
            )
        elif scope == EngineSwitch.Scope.PERSONALITY:
            Personality.objects.filter(pk=personality_id).update(engine=engine)
        else:
            adapters.set_conversation_engine_override(conversation_id, engine)
        record = EngineSwitch.objects.create(scope=scope, target=target, engine=engine, accepted=True, user=user)
        bump_version()
    metrics.SWITCHES.labels(scope, "accepted").inc()
    return record
