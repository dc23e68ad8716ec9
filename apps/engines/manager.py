"""The engine manager: which engines exist, which one answers a conversation, and switching it
without a restart.

Engines are registered by name (`register_engine(name, factory)`): the built-in offline, chat and
mem0 engines below, test engines by apps.engines.testing. Resolution order: the chat's override
(Conversation.engine_override, passed in by the pipeline) → the personality's engine → the global
active engine (EngineSetting) → "offline"; a name that is not registered is skipped.

`resolve_engine` is on the hot path of every message, so each process keeps the switch state in memory
(`SWITCH`, a versioned cache): a switch bumps it, and every web and worker process sees it within
ENGINE_SWITCH_CHECK_SECONDS plus one database read.
"""

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

from apps.core import aio
from apps.core.cache import VersionedCache
from apps.engines import metrics
from apps.engines.base import BaseEngine
from apps.engines.history import conversation_history
from apps.engines.models import EngineName, EngineSetting, EngineSwitch, Personality

logger = logging.getLogger(__name__)


class EngineUnavailable(Exception):
    """No engine is registered under this name."""


_factories: dict[str, Callable[[], BaseEngine]] = {}
_instances: dict[str, BaseEngine] = {}
_instances_lock = threading.Lock()


def register_engine(name: str, factory: Callable[[], BaseEngine]) -> None:
    """Make engine `name` available: `factory()` builds the process's one instance on first use."""
    with _instances_lock:
        _factories[name] = factory
        _instances.pop(name, None)


def engine_names() -> list[str]:
    return list(_factories)


def get_engine(name: str) -> BaseEngine:
    """The process-wide instance of engine `name` (engines keep clients and pools, so one each)."""
    engine = _instances.get(name)
    if engine is not None:
        return engine
    with _instances_lock:
        if name not in _instances:
            factory = _factories.get(name)
            if factory is None:
                raise EngineUnavailable(f"unknown engine {name!r}")
            _instances[name] = factory()
        return _instances[name]


def _builtin(dotted: str) -> Callable[[], BaseEngine]:
    return lambda: import_string(dotted)()  # imported on first use: mem0 and its clients are heavy


register_engine(EngineName.OFFLINE.value, _builtin("apps.engines.offline.OfflineEngine"))
register_engine(EngineName.CHAT.value, _builtin("apps.engines.chat.ChatEngine"))
register_engine(EngineName.MEM0.value, _builtin("apps.engines.mem0_engine.Mem0Engine"))


# --- which engine answers --------------------------------------------------------------------------
@dataclass
class SwitchState:
    active: str
    by_personality: dict[int, str] = field(default_factory=dict)
    default_personality_engine: str = ""


def load_state(version: str = "") -> SwitchState:
    """The switch state from the database (two small queries)."""
    active = EngineSetting.objects.filter(pk=EngineSetting.SINGLETON_ID).values_list("active_engine", flat=True).first()
    by_personality, default_engine = {}, ""
    for pk, engine, is_default in Personality.objects.filter(active=True).values_list("id", "engine", "is_default"):
        if engine:
            by_personality[pk] = engine
        if is_default:
            default_engine = engine
    return SwitchState(active or settings.ENGINE_DEFAULT, by_personality, default_engine)


SWITCH: VersionedCache[SwitchState] = VersionedCache(
    "engines.switch", load=load_state, check_seconds=lambda: settings.ENGINE_SWITCH_CHECK_SECONDS
)


async def resolve_engine(conversation_id: int, personality_id: int | None = None, override: str = "") -> BaseEngine:
    """The engine that answers this conversation now. Cheap: no query unless a switch happened."""
    state = await SWITCH.get()
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
    """Every registered engine with its info and health (cached a few seconds), for admin."""
    state = await SWITCH.get()

    async def one(name: str) -> dict:
        try:
            info = await get_engine(name).get_engine_info()
        except Exception as exc:  # an engine that cannot even describe itself is listed as broken
            info = {"name": name, "description": f"{exc.__class__.__name__}: {exc}"}
        health = await engine_health(name)
        return {"name": name, "active": name == state.active, "info": info, "health": health}

    return list(await asyncio.gather(*(one(name) for name in engine_names())))


# --- switching ------------------------------------------------------------------------------------
class SwitchRefused(Exception):
    """The switch was not made; the message says why, in Chinese, for the supervisor."""


def _scope(personality_id: int | None, conversation_id: int | None) -> tuple[str, str]:
    if personality_id is not None:
        return EngineSwitch.Scope.PERSONALITY, str(personality_id)
    if conversation_id is not None:
        return EngineSwitch.Scope.CHAT, str(conversation_id)
    return EngineSwitch.Scope.GLOBAL, ""


def _refusal(engine: str, scope: str, personality_id: int | None, conversation_id: int | None) -> str:
    """Why this switch cannot be made ("" when it can)."""
    if engine and engine not in _factories:
        return f"没有名为“{engine}”的引擎"
    if not engine and scope == EngineSwitch.Scope.GLOBAL:
        return "全局引擎不能为空"
    if engine:
        health = aio.run(engine_health(engine, fresh=True), timeout=40)
        if not health["ok"]:
            return f"引擎“{engine}”健康检查未通过，未切换：{health['detail']}"
    if scope == EngineSwitch.Scope.PERSONALITY and not Personality.objects.filter(pk=personality_id).exists():
        return f"人设 #{personality_id} 不存在"
    if scope == EngineSwitch.Scope.CHAT and conversation_history().conversation(conversation_id) is None:
        return f"会话 #{conversation_id} 不存在"
    return ""


def switch_engine(
    engine: str,
    *,
    personality_id: int | None = None,
    conversation_id: int | None = None,
    user=None,
) -> EngineSwitch:
    """Make `engine` answer globally, or for one personality, or for one chat. An empty `engine` with a
    personality or chat clears that override. Refuses an unregistered engine or one whose health check
    fails (SwitchRefused); every attempt is recorded. Sync: call it from admin views or commands."""
    scope, target = _scope(personality_id, conversation_id)
    user = user if getattr(user, "is_authenticated", False) else None
    refusal = _refusal(engine, scope, personality_id, conversation_id)
    if refusal:
        EngineSwitch.objects.create(
            scope=scope, target=target, engine=engine, accepted=False, detail=refusal, user=user
        )
        metrics.SWITCHES.labels(scope, "refused").inc()
        raise SwitchRefused(refusal)
    with transaction.atomic():
        if scope == EngineSwitch.Scope.GLOBAL:
            EngineSetting.objects.update_or_create(
                pk=EngineSetting.SINGLETON_ID, defaults={"active_engine": engine, "changed_by": user}
            )
        elif scope == EngineSwitch.Scope.PERSONALITY:
            Personality.objects.filter(pk=personality_id).update(engine=engine)
        else:
            conversation_history().set_engine_override(conversation_id, engine)
        record = EngineSwitch.objects.create(scope=scope, target=target, engine=engine, accepted=True, user=user)
        SWITCH.bump()
    metrics.SWITCHES.labels(scope, "accepted").inc()
    return record
