"""Drivers for the real WeChat desktop client: `wxauto` (WeChat 3.9; the `gcwxauto` wheel ships the
`wxauto` 39.x package) and `wxauto4` (WeChat 4.x). Windows only; tests use stand-ins that mimic
the libraries' documented API.

The API both libraries share (39.x / 41.x): ``WeChat()``, ``AddListenChat(nickname, callback)``
returning a ``Chat`` (or a falsy ``WxResponse`` on failure), ``callback(msg, chat)`` called from the
library's listener threads, ``RemoveListenChat(nickname)``, ``StopListening()``, ``IsOnline()``,
``GetMyInfo()``, ``Chat.ChatInfo()`` → ``{"chat_type": "friend" | "group" | ..., "chat_name": ...}``,
``Chat.SendMsg(msg, who=None, clear=True, at=None, exact=False)`` → ``WxResponse`` (truthy on
success). Messages: ``.attr`` friend / self / system / time / tickle, ``.type`` text / image / voice
/ ..., ``.content``, ``.sender``, ``.sender_remark``, ``.id``. Older 3.9 builds listen without a
callback: ``AddListenChat(who=...)`` then ``GetListenMessage()`` → ``{chat: [msg, ...]}``, with the
kind of message in ``.type`` (friend / self / sys / time / recall) — supported by polling.

Every call into the library runs on one `UIThread` (COM initialised). The library's callbacks only
normalise the message and put it in a thread-safe inbox; `poll()` drains the inbox. A keep-alive
re-attaches listeners the library dropped (window closed) and refreshes the online flag.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import threading
import time
from collections import Counter
from typing import Any

from agent.drivers.base import (
    DriverError,
    InboundMessage,
    MentionError,
    MessageFilter,
    UIThread,
    WeChatDriver,
)

log = logging.getLogger("agent.driver.wxauto")

GROUP_TYPES = {"group"}
LEGACY_ORIGINS = {"friend": "friend", "self": "self", "sys": "system", "time": "time", "recall": "system"}


class WxautoDriver(WeChatDriver):
    def __init__(
        self,
        *,
        module: str = "wxauto",
        watch_chats: list[str] | tuple[str, ...] = (),
        mention_names: list[str] | tuple[str, ...] = (),
        group_requires_mention: bool = True,
        keepalive_s: float = 30.0,
        send_timeout_s: float = 30.0,
        history_grace_s: float = 3.0,
        listen_interval_s: float = 1.0,
        wechat_factory=None,
    ):
        if not watch_chats:
            raise DriverError("the wxauto drivers listen to named chats only: set driver.watch_chats")
        self.name = module
        self._module_name = module
        self._factory = wechat_factory  # tests pass a stand-in; None imports the real library
        self._mention_names = tuple(mention_names)
        self.filter = MessageFilter(tuple(watch_chats), self._mention_names, group_requires_mention)
        self.keepalive_s = keepalive_s
        self.send_timeout_s = send_timeout_s
        self.history_grace_s = history_grace_s
        self.listen_interval_s = listen_interval_s
        self.ui = UIThread()
        self.wx: Any = None
        self._legacy = False
        self._chats: dict[str, Any] = {}  # chat name → the library's Chat (sub-window)
        self._kinds: dict[str, str] = {}  # chat name → private | group
        self._history: dict[str, tuple[float, Counter]] = {}  # chat → (attached at, history multiset)
        self._inbox: list[InboundMessage] = []
        self._inbox_lock = threading.Lock()
        self._online = False
        self._version = ""
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self.reattached = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.ui.start()
        self.ui.call(self._attach, timeout=120)
        self._keeper = threading.Thread(target=self._keep_alive, name=f"{self.name}-keepalive", daemon=True)
        self._keeper.start()

    def _attach(self) -> None:
        if self._factory is not None:
            self.wx = self._factory()
        else:  # pragma: no cover - Windows only
            module = importlib.import_module(self._module_name)
            params = getattr(module, "WxParam", None)
            if params is not None:
                if hasattr(params, "TELEMETRY_ENABLED"):
                    params.TELEMETRY_ENABLED = False  # wxauto4 reports usage unless told not to
                if hasattr(params, "ENABLE_FILE_LOGGER"):
                    params.ENABLE_FILE_LOGGER = False  # the agent keeps its own rotating log
            self.wx = module.WeChat()
        if not self._mention_names:
            nickname = ""
            try:
                nickname = (self.wx.GetMyInfo() or {}).get("nickname", "") if hasattr(self.wx, "GetMyInfo") else ""
            except Exception:  # noqa: BLE001 - best effort
                nickname = ""
            nickname = nickname or getattr(self.wx, "nickname", "") or ""
            self.filter.mention_names = (nickname,) if nickname else ()
        self._legacy = not self._accepts_callback(self.wx.AddListenChat)
        self._version = self._wechat_version()
        for chat in self.filter.watch_chats:
            self._listen(chat)
        self._online = self._is_online()

    @staticmethod
    def _accepts_callback(method) -> bool:
        try:
            return "callback" in inspect.signature(method).parameters
        except (TypeError, ValueError):
            return True

    def _listen(self, chat: str) -> bool:
        """Attach a listener to `chat` (UI thread). Records what the window already shows, so the
        history displayed when it opens is not taken for new messages."""
        self._history[chat] = (time.monotonic(), Counter())
        if self._legacy:
            result = self.wx.AddListenChat(who=chat)
            chat_obj = chat
        else:
            result = self.wx.AddListenChat(nickname=chat, callback=self._on_message)
            chat_obj = result
        if result is not None and not result and not hasattr(result, "SendMsg"):
            log.warning("cannot listen to %s: %s", chat, _message_of(result))
            return False
        if hasattr(chat_obj, "SendMsg"):
            self._chats[chat] = chat_obj
            self._kinds[chat] = self._kind_of(chat_obj)
            try:
                shown = chat_obj.GetAllMessage() if hasattr(chat_obj, "GetAllMessage") else []
            except Exception:  # noqa: BLE001 - a window without history
                shown = []
            self._history[chat] = (time.monotonic(), Counter(self._history_key(m) for m in shown or []))
        else:
            self._kinds.setdefault(chat, "private")
        return True

    @staticmethod
    def _kind_of(chat_obj) -> str:
        try:
            info = chat_obj.ChatInfo() or {}
        except Exception:  # noqa: BLE001
            info = {}
        return "group" if info.get("chat_type") in GROUP_TYPES else "private"

    @staticmethod
    def _history_key(msg) -> tuple[str, str]:
        return (str(getattr(msg, "sender", "")), str(getattr(msg, "content", "")))

    def _is_online(self) -> bool:
        try:
            return bool(self.wx.IsOnline()) if hasattr(self.wx, "IsOnline") else True
        except Exception:  # noqa: BLE001
            return False

    def _wechat_version(self) -> str:
        lib = ""
        try:
            module = sys.modules.get(self._module_name)
            params = getattr(module, "param", None)
            lib = getattr(params, "VERSION", "") or getattr(module, "__version__", "")
        except Exception:  # noqa: BLE001
            lib = ""
        client = ""
        if sys.platform == "win32":  # pragma: no cover - reads WeChat.exe / Weixin.exe file version
            try:
                import psutil
                import win32api

                for proc in psutil.process_iter(["name", "exe"]):
                    if (proc.info["name"] or "").lower() in ("wechat.exe", "weixin.exe"):
                        info = win32api.GetFileVersionInfo(proc.info["exe"], "\\")
                        ms, ls = info["FileVersionMS"], info["FileVersionLS"]
                        client = f"{ms >> 16}.{ms & 0xFFFF}.{ls >> 16}.{ls & 0xFFFF}"
                        break
            except Exception:  # noqa: BLE001
                client = ""
        return client or (f"{self._module_name} {lib}".strip())

    def _keep_alive(self) -> None:
        next_keepalive = time.monotonic() + self.keepalive_s
        while not self._stop.wait(self.listen_interval_s if self._legacy else min(self.keepalive_s, 1.0)):
            try:
                if self._legacy:
                    self.ui.call(self._poll_legacy, timeout=self.send_timeout_s)
                if time.monotonic() >= next_keepalive:
                    next_keepalive = time.monotonic() + self.keepalive_s
                    self.ui.call(self._check_listeners, timeout=self.send_timeout_s)
            except Exception as exc:  # noqa: BLE001 - keep the keeper alive
                self._online = False
                log.warning("%s keep-alive failed: %s", self.name, exc)

    def _check_listeners(self) -> None:
        """Re-attach every watched chat the library no longer listens to (UI thread)."""
        self._online = self._is_online()
        if not self._online:
            return
        listening = getattr(self.wx, "listen", None)
        for chat in self.filter.watch_chats:
            if listening is not None and chat in listening:
                continue
            if listening is None and chat in self._chats:
                continue
            log.info("listener for %s dropped; re-attaching", chat)
            if self._listen(chat):
                self.reattached += 1

    # -- inbound ---------------------------------------------------------------------------------
    def _on_message(self, msg, chat_obj) -> None:
        """The library's callback (its listener thread): normalise and queue; no UI calls here."""
        chat = getattr(chat_obj, "who", None) or str(chat_obj)
        self._accept(chat, msg, origin=getattr(msg, "attr", "friend"), content_kind=getattr(msg, "type", "text"))

    def _poll_legacy(self) -> None:
        for chat_obj, msgs in (self.wx.GetListenMessage() or {}).items():
            chat = getattr(chat_obj, "who", None) or str(chat_obj)
            if chat not in self._chats and hasattr(chat_obj, "SendMsg"):  # first sight of its window
                self._chats[chat] = chat_obj
                self._kinds[chat] = self._kind_of(chat_obj)
            for msg in msgs:
                kind = getattr(msg, "type", "friend")
                self._accept(chat, msg, origin=LEGACY_ORIGINS.get(kind, "system"), content_kind="text")

    def _accept(self, chat: str, msg, *, origin: str, content_kind: str) -> None:
        if origin not in ("friend", "self"):
            return  # system, time, tickle, recall
        attached_at, shown = self._history.get(chat, (0.0, Counter()))
        key = self._history_key(msg)
        if shown.get(key) and time.monotonic() - attached_at < self.history_grace_s:
            shown[key] -= 1  # the history the window showed when it opened, delivered again
            return
        sender = str(getattr(msg, "sender", "")) if origin == "friend" else "self"
        built = self.filter.build(
            chat_name=chat,
            chat_kind="group" if self._kinds.get(chat) == "group" else "private",  # type: ignore[arg-type]
            sender=sender,
            display_name=str(getattr(msg, "sender_remark", "") or sender),
            text=str(getattr(msg, "content", "")),
            content_kind=str(content_kind or "text"),
            origin=origin,
            native_id=str(getattr(msg, "id", "") or getattr(msg, "hash", "") or ""),
        )
        if built is not None:
            with self._inbox_lock:
                self._inbox.append(built)

    def poll(self) -> list[InboundMessage]:
        with self._inbox_lock:
            batch, self._inbox = self._inbox, []
        return batch

    # -- outbound --------------------------------------------------------------------------------
    def send_text(self, chat: str, text: str, at: str | list[str] | None = None) -> None:
        if self.wx is None:
            raise DriverError(f"{self.name} not started")
        result = self.ui.call(self._send, chat, text, at, timeout=self.send_timeout_s)
        if result is not None and not result:  # WxResponse is falsy on failure; old builds return None
            message = _message_of(result)
            if at and ("@" in message or "at" in message.lower()):
                raise MentionError(message)
            raise DriverError(f"send to {chat} failed: {message}")

    def _send(self, chat: str, text: str, at):
        target = self._chats.get(chat)
        if target is not None:  # the listened sub-window: no search, no switching
            return target.SendMsg(text, at=at) if at else target.SendMsg(text)
        kwargs = {"who": chat, "exact": True}
        if at:
            kwargs["at"] = at
        return self.wx.SendMsg(text, **kwargs)

    # -- health ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "driver": self.name,
            "wx_online": self._online,
            "wechat_version": self._version,
            "ui_latency_ms": round(self.ui.last_latency_ms, 3),
            "listening": sorted(self._chats),
            "reattached": self.reattached,
        }

    def stop(self) -> None:
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join(timeout=5)
        if self.wx is not None and hasattr(self.wx, "StopListening"):
            try:
                self.ui.call(self.wx.StopListening, timeout=10)
            except Exception as exc:  # noqa: BLE001
                log.warning("StopListening failed: %s", exc)
        self.ui.stop()


def _message_of(result) -> str:
    if isinstance(result, dict):
        return str(result.get("message") or result.get("status") or result)
    return str(result)
