"""The driver interface, the normalised message, and the pieces every driver shares.

A driver turns one WeChat client (or the simulator) into `poll() -> list[InboundMessage]` and
`send_text(chat, text, at=None)`. What it returns is already filtered:

- only chats on the watch-list (an empty list watches every chat the driver listens to);
- group messages only when they @-mention us (WeChat writes ``@name`` followed by U+2005; the
  mention is stripped from the text);
- system and time messages are dropped; ``self`` messages (typed in WeChat on this PC) are returned
  with ``origin="self"`` so the runtime can detect a human taking over — they are never forwarded.

Duplicates (a listener re-attached, history shown again) are dropped by fingerprint in the runtime
(`agent.dedupe`), after the message is safely queued.
"""

from __future__ import annotations

import hashlib
import queue
import sys
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ChatKind = Literal["private", "group"]
Origin = Literal["friend", "self", "system"]
ContentKind = str  # text, image, voice, video, file, link, quote, emotion, location, ... , other

MENTION_SEPARATOR = "\u2005"  # WeChat puts a four-per-em space after "@name"


class DriverError(RuntimeError):
    """A driver operation failed (window lost, logged out, send refused)."""


class MentionError(DriverError):
    """The @-mention could not be inserted (no member popup); nothing was sent."""


class SendTimeout(DriverError):
    """The UI did not confirm a send in time: whether WeChat sent it is unknown."""


@dataclass(frozen=True, slots=True)
class InboundMessage:
    chat_name: str
    chat_kind: ChatKind
    sender: str
    display_name: str
    text: str
    content_kind: ContentKind
    origin: Origin
    mentions_me: bool
    fingerprint: str
    received_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fingerprint(chat_name: str, sender: str, text: str, native_id: str = "") -> str:
    """A stable id for one message: the same message seen twice gives the same fingerprint.

    `native_id` is whatever the client offers to tell two identical texts apart (the simulator's
    message id, wxauto's message id / hash); without it two identical texts from one sender in one
    chat count as one message.
    """
    raw = "\x1f".join((chat_name, sender, text, str(native_id)))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def find_mention(text: str, names: tuple[str, ...]) -> tuple[bool, str]:
    """(mentions one of `names`, text with that mention removed).

    WeChat inserts ``@name`` + U+2005; a mention at the very end of the text may have no separator.
    """
    for name in names:
        if not name:
            continue
        tag = f"@{name}"
        if tag + MENTION_SEPARATOR in text:
            return True, text.replace(tag + MENTION_SEPARATOR, "").strip()
        if text.endswith(tag):
            return True, text[: -len(tag)].strip()
        if tag + " " in text:  # pasted / typed with an ordinary space
            return True, text.replace(tag + " ", "", 1).strip()
    return False, text


@dataclass(slots=True)
class MessageFilter:
    """The watch-list and mention rules every driver applies."""

    watch_chats: tuple[str, ...] = ()
    mention_names: tuple[str, ...] = ()
    group_requires_mention: bool = True

    def watched(self, chat_name: str) -> bool:
        return not self.watch_chats or chat_name in self.watch_chats

    def build(
        self,
        *,
        chat_name: str,
        chat_kind: ChatKind,
        sender: str,
        display_name: str,
        text: str,
        content_kind: str,
        origin: str,
        native_id: str = "",
        received_at: float | None = None,
    ) -> InboundMessage | None:
        """The normalised message, or None when the rules drop it."""
        if origin not in ("friend", "self") or not self.watched(chat_name):
            return None
        mentions_me = False
        if chat_kind == "group" and origin == "friend":
            mentions_me, stripped = find_mention(text, self.mention_names)
            if self.group_requires_mention and not mentions_me:
                return None
        else:
            stripped = text
        return InboundMessage(
            chat_name=chat_name,
            chat_kind=chat_kind,
            sender=sender,
            display_name=display_name or sender,
            text=stripped,
            content_kind=content_kind or "text",
            origin=origin,  # type: ignore[arg-type]
            mentions_me=mentions_me,
            fingerprint=fingerprint(chat_name, sender, text, native_id),
            received_at=received_at if received_at is not None else time.time(),
        )


class WeChatDriver(ABC):
    """One WeChat client. Every method is called from the agent's runtime; none may block for long
    except `send_text`, which the runtime calls from a worker thread."""

    name: str = "base"

    @abstractmethod
    def start(self) -> None:
        """Attach to the client and start listening to the watched chats."""

    @abstractmethod
    def poll(self) -> list[InboundMessage]:
        """New messages since the last call (possibly none). Never blocks on the UI."""

    @abstractmethod
    def send_text(self, chat: str, text: str, at: str | list[str] | None = None) -> None:
        """Send `text` to `chat`, @-mentioning `at` in a group. Raises `DriverError` on failure."""

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """Health for the heartbeat: at least wx_online, wechat_version, driver, ui_latency_ms."""

    @abstractmethod
    def stop(self) -> None:
        """Detach; the driver cannot be used afterwards."""


class UIThread:
    """The one thread that talks to the WeChat UI, fed by a queue.

    UI Automation is COM: calls must come from a thread that initialised COM, and the client does not
    like two threads clicking at once. Every UI call goes through `call()`, which runs it here and
    waits for the result. The last call's latency is kept for the heartbeat.
    """

    def __init__(self, name: str = "wx-ui"):
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False
        self.last_latency_ms = 0.0

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def _run(self) -> None:
        com = None
        if sys.platform == "win32":  # pragma: no cover - Windows only
            import pythoncom

            pythoncom.CoInitialize()
            com = pythoncom
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                fn, args, kwargs, future = item
                if not future.set_running_or_notify_cancel():
                    continue
                started = time.perf_counter()
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    future.set_exception(exc)
                finally:
                    self.last_latency_ms = (time.perf_counter() - started) * 1000
        finally:
            if com is not None:  # pragma: no cover
                com.CoUninitialize()

    def submit(self, fn, *args, **kwargs) -> Future:
        if not self._started:
            raise DriverError("UI thread not started")
        future: Future = Future()
        self._queue.put((fn, args, kwargs, future))
        return future

    def call(self, fn, *args, timeout: float | None = 30.0, **kwargs):
        future = self.submit(fn, *args, **kwargs)
        try:
            return future.result(timeout=timeout)
        except TimeoutError as exc:
            raise SendTimeout(f"UI call {getattr(fn, '__name__', fn)} did not finish in {timeout}s") from exc

    def stop(self, timeout: float = 5.0) -> None:
        if self._started:
            self._queue.put(None)
            self._thread.join(timeout)
            self._started = False
