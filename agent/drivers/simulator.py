"""The simulator driver: in-memory WeChat chats and groups with scripted customers.

Messages arrive by `inject(...)` (in-process), by lines appended to an inbox JSONL file (another
process — tests, `make run` — can feed a running agent), or from a script of customers. Everything
sent lands in `outbox` (and, when configured, an outbox JSONL file that outlives the process, so a
test can check after a kill -9 that nothing was sent twice). Like the real client, every send comes
back on the next `poll()` as a ``self`` message in that chat.

Fault switches (`faults`): ``window_lost`` (poll and send fail), ``logged_out`` (offline, sends
refused), ``send_timeout`` (the text goes out but the send call times out — outcome unknown to the
caller), ``mention_popup_missing`` (an @-mention cannot be inserted), ``history_replayed`` (the next
poll returns every message seen so far again).

The simulator enforces the same `PacingPolicy` as the runtime: a send that comes too early, over a
cap, or in quiet hours is refused and counted in ``pacing_violations``.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.drivers.base import (
    MENTION_SEPARATOR,
    DriverError,
    InboundMessage,
    MentionError,
    MessageFilter,
    SendTimeout,
    WeChatDriver,
)
from agent.pacing import PacingConfig, PacingPolicy

FAULTS = ("window_lost", "logged_out", "send_timeout", "mention_popup_missing", "history_replayed")

# EV-charger customers (the demo knowledge base answers most; the contract question goes to a human).
DEMO_CUSTOMERS = [
    ("private", "张三", "张三", "7kW 的桩充满一辆车要多久？"),
    ("group", "渝A车友售后群", "李四", "特斯拉能用你们的充电桩吗？"),
    ("private", "王五", "王五", "合同到期了，续签需要准备什么材料？"),
    ("group", "渝A车友售后群", "赵六", "家用交流桩有哪些功率可以选？"),
    ("private", "钱七", "钱七", "充电枪线有多长？"),
    ("private", "孙八", "孙八", "漏电保护开关老是跳闸怎么办？"),
]


@dataclass
class RawMessage:
    chat: str
    kind: str  # private | group
    sender: str
    text: str
    origin: str = "friend"  # friend | self | system | time
    id: str = ""
    ts: float = field(default_factory=time.time)


class SimulatorDriver(WeChatDriver):
    name = "simulator"

    def __init__(
        self,
        *,
        self_name: str = "客服小助手",
        watch_chats: list[str] | tuple[str, ...] = (),
        mention_names: list[str] | tuple[str, ...] = (),
        group_requires_mention: bool = True,
        pacing: PacingConfig | dict | None = None,
        inbox_path: str | None = None,
        outbox_path: str | None = None,
        script: list[dict] | str | None = None,
        script_interval_s: float = 30.0,
        echo_sends: bool = True,
        send_latency_s: float = 0.0,
    ):
        self.self_name = self_name
        self.filter = MessageFilter(tuple(watch_chats), tuple(mention_names) or (self_name,), group_requires_mention)
        config = PacingConfig(**pacing) if isinstance(pacing, dict) else (pacing or PacingConfig.immediate())
        self.policy = PacingPolicy(config)
        self.inbox_path = Path(inbox_path) if inbox_path else None
        self.outbox_path = Path(outbox_path) if outbox_path else None
        self.faults: dict[str, bool] = dict.fromkeys(FAULTS, False)
        self.outbox: list[dict[str, Any]] = []
        self.pacing_violations = 0
        self.echo_sends = echo_sends
        self.send_latency_s = send_latency_s
        self._pending: list[RawMessage] = []
        self._chat_kinds: dict[str, str] = {}
        self._history: list[RawMessage] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._inbox_offset = 0
        self._script = self._load_script(script)
        self._script_interval = script_interval_s
        self._script_next = 0.0
        self._started = False
        self._ui_latency_ms = 0.0

    # -- test / demo helpers ---------------------------------------------------------------------
    def inject(
        self,
        chat: str,
        text: str,
        *,
        sender: str | None = None,
        kind: str = "private",
        origin: str = "friend",
        mention: bool = True,
        msg_id: str | None = None,
    ) -> RawMessage:
        """A customer (or, with origin="self", a person at this PC) writes `text` in `chat`."""
        if kind == "group" and origin == "friend" and mention:
            text = f"@{self.self_name}{MENTION_SEPARATOR}{text}"
        raw = RawMessage(
            chat=chat,
            kind=kind,
            sender=sender or (chat if kind == "private" else "群成员"),
            text=text,
            origin=origin,
            id=msg_id or f"sim-{next(self._ids)}-{time.time_ns()}",
        )
        with self._lock:
            self._pending.append(raw)
            self._chat_kinds[chat] = kind
        return raw

    def type_as_human(self, chat: str, text: str, kind: str = "private") -> RawMessage:
        """Someone at the PC types in WeChat: a ``self`` message the bot did not send."""
        return self.inject(chat, text, sender=self.self_name, kind=kind, origin="self")

    def set_fault(self, name: str, on: bool = True) -> None:
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; one of {', '.join(FAULTS)}")
        self.faults[name] = on

    # -- WeChatDriver ----------------------------------------------------------------------------
    def start(self) -> None:
        self._started = True
        self._script_next = time.monotonic() + min(3.0, self._script_interval)

    def poll(self) -> list[InboundMessage]:
        if not self._started:
            raise DriverError("simulator not started")
        if self.faults["window_lost"]:
            raise DriverError("WeChat window lost")
        self._read_inbox()
        self._run_script()
        with self._lock:
            batch, self._pending = self._pending, []
            self._history.extend(batch)
            del self._history[:-2000]
            if self.faults["history_replayed"]:
                self.faults["history_replayed"] = False
                batch = list(self._history)
        out = []
        for raw in batch:
            msg = self.filter.build(
                chat_name=raw.chat,
                chat_kind="group" if raw.kind == "group" else "private",
                sender=raw.sender,
                display_name=raw.sender,
                text=raw.text,
                content_kind="text",
                origin=raw.origin,
                native_id=raw.id,
                received_at=raw.ts,
            )
            if msg is not None:
                out.append(msg)
        return out

    def send_text(self, chat: str, text: str, at: str | list[str] | None = None) -> None:
        started = time.perf_counter()
        if self.faults["window_lost"]:
            raise DriverError("WeChat window lost")
        if self.faults["logged_out"]:
            raise DriverError("WeChat is logged out")
        if at and self.faults["mention_popup_missing"]:
            raise MentionError("the @-mention popup did not appear")
        reason = self.policy.violation()
        if reason:
            self.pacing_violations += 1
            raise DriverError(f"pacing violated: {reason}")
        if self.send_latency_s:
            time.sleep(self.send_latency_s)
        names = [at] if isinstance(at, str) else list(at or [])
        shown = "".join(f"@{name}{MENTION_SEPARATOR}" for name in names) + text
        record = {"chat": chat, "text": text, "at": names, "shown": shown, "ts": time.time()}
        with self._lock:
            self.outbox.append(record)
            if self.echo_sends:
                kind = self._chat_kinds.get(chat, "group" if names else "private")
                self._pending.append(
                    RawMessage(
                        chat=chat,
                        kind=kind,
                        sender=self.self_name,
                        text=shown,
                        origin="self",
                        id=f"sent-{next(self._ids)}",
                    )
                )
        if self.outbox_path:
            line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
            with open(self.outbox_path, "ab") as fh:  # one write per send, survives a kill -9
                fh.write(line)
        self.policy.record()
        self._ui_latency_ms = (time.perf_counter() - started) * 1000
        if self.faults["send_timeout"]:
            raise SendTimeout("send did not confirm in time")

    def status(self) -> dict[str, Any]:
        online = not (self.faults["logged_out"] or self.faults["window_lost"])
        return {
            "driver": self.name,
            "wx_online": online,
            "wechat_version": "simulator",
            "ui_latency_ms": round(self._ui_latency_ms, 3),
            "pacing_violations": self.pacing_violations,
        }

    def stop(self) -> None:
        self._started = False

    # -- inbox file and script -------------------------------------------------------------------
    def _read_inbox(self) -> None:
        if not self.inbox_path or not self.inbox_path.exists():
            return
        size = self.inbox_path.stat().st_size
        if size <= self._inbox_offset:
            return
        with open(self.inbox_path, "rb") as fh:
            fh.seek(self._inbox_offset)
            chunk = fh.read(size - self._inbox_offset)
        end = chunk.rfind(b"\n") + 1  # only whole lines; a line being written is read next time
        start, self._inbox_offset = self._inbox_offset, self._inbox_offset + end
        position = start
        for line in chunk[:end].split(b"\n")[:-1]:
            offset, position = position, position + len(line) + 1
            if not line.strip():
                continue
            item = json.loads(line)
            # without an explicit id, the line's place in the file is its id: stable when re-read
            msg_id = item.get("id") or item.get("msg_id") or f"inbox-{offset}"
            self.inject(
                item["chat"],
                item["text"],
                sender=item.get("sender"),
                kind=item.get("kind", "private"),
                origin=item.get("origin", "friend"),
                mention=item.get("mention", True),
                msg_id=msg_id,
            )

    @staticmethod
    def _load_script(script: list[dict] | str | None) -> list[dict]:
        if script == "demo":
            return [{"kind": k, "chat": c, "sender": s, "text": t} for k, c, s, t in DEMO_CUSTOMERS]
        if isinstance(script, str):
            return json.loads(Path(script).read_text(encoding="utf-8"))
        return list(script or [])

    def _run_script(self) -> None:
        if not self._script or time.monotonic() < self._script_next:
            return
        item = random.choice(self._script)  # noqa: S311 - demo traffic
        self.inject(item["chat"], item["text"], sender=item.get("sender"), kind=item.get("kind", "private"))
        self._script_next = time.monotonic() + self._script_interval


def append_inbox(path: str | os.PathLike, **message: Any) -> None:
    """Feed a running simulator from another process: one JSON line per message."""
    with open(path, "ab") as fh:
        fh.write((json.dumps(message, ensure_ascii=False) + "\n").encode("utf-8"))


def read_outbox(path: str | os.PathLike) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
