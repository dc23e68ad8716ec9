"""The agent's main loop: driver → durable queue → server, server replies → paced sends → acks.

Four asyncio tasks:
- poll: drains the driver; a ``self`` message that is not a recent bot reply is a human takeover;
  a new customer message is appended to the encrypted offline queue (durable before anything
  else happens), then its fingerprint is remembered so a replay is dropped.
- connection: logs in, opens the WebSocket (REST when WebSocket keeps failing), flushes the queue
  oldest first in batches — an item leaves the queue only when the server confirmed it — and reads
  reply frames. Reconnects with exponential backoff and jitter.
- replies: one reply at a time, paced like a person; ``sending`` is persisted before the UI send and
  ``sent`` after it, then the outcome is acked. A reply id already in the ledger is never sent again.
- heartbeat: resources + WeChat state + queue figures (never a secret), every `heartbeat_s` until the server
  says otherwise (the admin's interval, in `hello` and every heartbeat answer), and once a flush emptied the queue
  (so the server's backlog reading does not stay at the last figure before the flush).

Delivery guarantees: messages reach the server at least once (the server keeps one per agent +
fingerprint, so a retry is a no-op); a reply is sent at most once — a reply found ``sending`` after
a crash (the agent died during the UI send) is acked ``failed`` ("outcome unknown"), never resent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agent import __version__
from agent.client import AuthFailed, ServerClient, ServerUnavailable, accepted_ids, close_action, message_item
from agent.config import AgentConfig
from agent.drivers import create_driver
from agent.drivers.base import DriverError, MentionError, SendTimeout, WeChatDriver
from agent.instance import installation_id
from agent.pacing import PacingPolicy
from agent.store import DeadLetters, OfflineQueue, SeenSet, SentLedger
from agent.takeover import TakeoverDetector

log = logging.getLogger("agent")

ACK_DELIVERED, ACK_FAILED = "delivered", "failed"
# What a server older than its `hello.max_message_bytes` accepted (Daphne's default frame limit).
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
# Bounds of a heartbeat interval the server asks for: never a busy loop, and the beat also keeps the access token
# fresh (refreshed before it expires, AGENT_ACCESS_TOKEN_TTL 1 h by default).
HEARTBEAT_MIN_S, HEARTBEAT_MAX_S = 1.0, 600.0
# Error-frame codes by which the server refuses a `messages` frame for good (as opposed to throttled /
# server_error: retry). Parse-level ones come without the `frame` the error answers.
REFUSED_FOR_GOOD = {"invalid", "content_too_long", "too_large", "too_deep", "malformed"}
PARSE_REFUSALS = {"too_large", "too_deep", "malformed"}


class BatchRefused(Exception):
    """The server (or the frame limit it announced) refuses a whole batch frame for good."""


class _AcceptWaiter:
    """A sent batch waiting for its `accepted_batch`: which ids are still unconfirmed, and the ones refused."""

    def __init__(self, ids: list[str], future: asyncio.Future):
        self.ids, self.waiting, self.future = ids, set(ids), future
        self.rejected: dict[str, str] = {}  # client id → the server's reason


class AgentRuntime:
    def __init__(self, config: AgentConfig, driver: WeChatDriver | None = None, *, client: ServerClient | None = None):
        self.config = config
        state = Path(config.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        secret = config.server.secret
        fsync = config.queue.fsync
        self.queue = OfflineQueue(state / "offline-queue.log", secret, capacity=config.queue.capacity, fsync=fsync)
        self.ledger = SentLedger(state / "sent-replies.log", secret, fsync=fsync)
        self.seen = SeenSet(state / "seen.log", secret, fsync=fsync)
        self.dead_letters = DeadLetters(state / "dead-letters.log", secret, fsync=fsync)
        if driver is None:
            options = dict(config.driver.options)
            options.setdefault("watch_chats", config.driver.watch_chats)
            if config.driver.mention_names:
                options.setdefault("mention_names", config.driver.mention_names)
            options.setdefault("group_requires_mention", config.driver.group_requires_mention)
            if config.driver.name == "simulator":
                options.setdefault("pacing", config.pacing)
            driver = create_driver(config.driver.name, **options)
        self.driver = driver
        self.policy = PacingPolicy(config.pacing)
        self.takeover = TakeoverDetector(
            bot_echo_window_s=config.takeover.bot_echo_window_s, pause_s=config.takeover.pause_s
        )
        self.client = client or ServerClient(config.server, instance=installation_id(state))
        self.counters = {
            "processed": 0,
            "send_failures": 0,
            "duplicates": 0,
            "takeovers": 0,
            "replies_sent": 0,
            "rejected": 0,
        }
        self.mode = "offline"  # offline | ws | rest
        self.standby = False  # the server refused our socket: another process with these credentials sends
        self._ws = None
        self._ws_lock = asyncio.Lock()
        self._replies: asyncio.Queue[dict] = asyncio.Queue()
        self._inflight: set[str] = set()
        self._pending_takeovers: list[str] = []
        self._flush_wake = asyncio.Event()
        self.heartbeat_s = config.heartbeat_s  # the server's interval once it has told us
        self._heartbeat_wake = asyncio.Event()
        self._control_wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._accept_waiter: _AcceptWaiter | None = None
        self._max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES
        self._batch_size = config.server.batch_size  # halved while a batch is refused whole, across reconnects
        self._wx_error = ""
        self._started_at = time.time()
        self._proc = None
        self._last_status: dict | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    async def run(self) -> None:
        # Two worker threads are plenty (one UI send, one REST call at a time); every extra thread
        # would get its own malloc arena and grow the agent's RSS.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(2, thread_name_prefix="agent-io"))
        await asyncio.to_thread(self.driver.start)
        log.info(
            "agent %s started: driver %s, queue %d waiting (%d dropped so far)",
            self.config.server.agent_id,
            self.driver.name,
            len(self.queue),
            self.queue.dropped,
        )
        tasks = [
            asyncio.create_task(coro, name=name)
            for name, coro in (
                ("poll", self._poll_loop()),
                ("connection", self._connection_loop()),
                ("replies", self._reply_loop()),
                ("heartbeat", self._heartbeat_loop()),
            )
        ]
        try:
            stop = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and task.exception():
                    raise task.exception()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._shutdown()

    def stop(self) -> None:
        self._stop.set()

    async def _shutdown(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.driver.stop)
        with contextlib.suppress(Exception):
            await self.client.close()
        for store in (self.queue, self.ledger, self.seen, self.dead_letters):
            store.close()
        log.info("agent stopped")

    async def _sleep(self, seconds: float, *wake: asyncio.Event) -> None:
        waiters = [asyncio.create_task(e.wait()) for e in (self._stop, *wake)]
        try:
            await asyncio.wait(waiters, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    # -- inbound: driver → queue -----------------------------------------------------------------
    async def _poll_loop(self) -> None:
        while not self._stop.is_set():
            if not self.poll_once():
                self.queue.maintain()  # compaction when nothing is arriving, not inside put()
            self._write_status()
            await self._sleep(self.config.poll_interval_s)

    def status(self) -> dict[str, Any]:
        """A local snapshot (state_dir/status.json) for whoever runs the agent: no secret, no content."""
        return {
            "mode": self.mode,
            "queue_size": len(self.queue),
            "dropped": self.queue.dropped,
            "dead_letters": len(self.dead_letters),
            "paused_chats": self.takeover.paused_chats(),
            "wx_error": self._wx_error,
            "standby": self.standby,
            **self.counters,
        }

    def _write_status(self) -> None:
        snapshot = self.status()
        if snapshot == self._last_status:
            return
        self._last_status = snapshot
        path = Path(self.config.state_dir) / "status.json"
        tmp = path.with_name("status.json.tmp")
        tmp.write_text(
            json.dumps({**snapshot, "pid": os.getpid(), "at": time.time()}, ensure_ascii=False), encoding="utf-8"
        )
        os.replace(tmp, path)

    def poll_once(self) -> int:
        """One drain of the driver; returns how many new customer messages were queued."""
        try:
            messages = self.driver.poll()
            self._wx_error = ""
        except DriverError as exc:
            if self._wx_error != str(exc):
                log.warning("driver: %s", exc)
            self._wx_error = str(exc)
            return 0
        new = 0
        for msg in messages:
            if msg.fingerprint in self.seen:
                self.counters["duplicates"] += 1
                continue
            if msg.origin == "self":
                if self.takeover.observe_self_message(msg.chat_name, msg.text):
                    self.counters["takeovers"] += 1
                    self._pending_takeovers.append(msg.chat_name)
                    self._control_wake.set()
                    log.info(
                        "human takeover in %s: bot paused there for %.0f s", msg.chat_name, self.config.takeover.pause_s
                    )
            else:
                self.queue.put(msg.to_dict())  # durable before we remember it as seen
                new += 1
            self.seen.add(msg.fingerprint)
        if new:
            self._flush_wake.set()
        return new

    # -- connection ------------------------------------------------------------------------------
    async def _connection_loop(self) -> None:
        rc = self.config.reconnect
        backoff = rc.initial_s
        ws_failures = 0
        rest_until = 0.0
        while not self._stop.is_set():
            started = time.monotonic()
            wait_longest = False  # credentials refused / agent disabled: fast retries cannot help
            try:
                use_rest = self.config.server.transport == "rest" or (
                    self.config.server.transport == "auto" and time.monotonic() < rest_until
                )
                if use_rest:
                    await self._rest_session(deadline=rest_until if self.config.server.transport == "auto" else None)
                else:
                    await self.client.access_token()  # HTTP reachable and credentials good?
                    try:
                        ws = await self.client.connect_ws()
                    except Exception as exc:
                        if close_action(exc) is None and self.config.server.transport == "auto":
                            ws_failures += 1
                            if ws_failures >= 3:  # HTTP works, the WebSocket does not (proxy?)
                                log.warning("WebSocket keeps failing (%s); using REST for 5 minutes", exc)
                                rest_until = time.monotonic() + 300
                                ws_failures = 0
                        raise
                    ws_failures = 0
                    await self._ws_session(ws)
            except AuthFailed as exc:
                log.error("server refused the agent's credentials: %s", exc)
                wait_longest = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: back off and retry
                wait_longest = self._after_close(exc)
            finally:
                self.mode = "offline"
                self._ws = None
            if time.monotonic() - started > 30:
                backoff = rc.initial_s
            if wait_longest:
                backoff = rc.max_s
            delay = min(rc.max_s, backoff) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
            backoff = min(rc.max_s, backoff * 2)
            await self._sleep(delay)

    def _after_close(self, exc: Exception) -> bool:
        """Prepare the tokens for the next connection as the close code says; True: wait the longest delay."""
        action = close_action(exc)
        if action is not None:
            self.client.prepare_reconnect(action)
        self.standby = action == "standby"
        if self.standby:
            log.error(
                "服务器拒绝了本连接：另一个使用相同凭据的客服终端进程（另一个文件夹或另一台电脑）正在发送回复；本进程待命，"
                "每 %.0f 秒重试一次。 / The server refused this connection: another agent process with the same "
                "credentials (another folder or PC) is sending replies; standing by, retrying every %.0f s (%s).",
                self.config.reconnect.max_s,
                self.config.reconnect.max_s,
                exc,
            )
            return True
        if action == "stop":
            log.error("the server disabled this agent (%s); retrying every %.0f s", exc, self.config.reconnect.max_s)
            return True
        log.warning("connection lost (%s: %s)%s", type(exc).__name__, exc, f"; next: {action}" if action else "")
        return False

    async def _ws_session(self, ws) -> None:
        try:
            self._ws = ws
            self.mode = "ws"
            log.info("connected (WebSocket); %d queued message(s) to flush", len(self.queue))
            reader = asyncio.create_task(self._ws_reader(ws))
            try:
                await self._on_connected()
                while not self._stop.is_set():
                    await self._flush_queue()
                    await self._send_control()
                    self._flush_wake.clear()
                    if len(self.queue):
                        continue
                    wake = [asyncio.create_task(e.wait()) for e in (self._flush_wake, self._control_wake, self._stop)]
                    done, _ = await asyncio.wait([reader, *wake], return_when=asyncio.FIRST_COMPLETED)
                    for w in wake:
                        w.cancel()
                    if reader in done:
                        reader.result()  # raises the connection error
                        return  # closed cleanly by the server
            except ServerUnavailable:  # a batch cut short by the close: the close code says what to do next
                if reader.done() and not reader.cancelled() and close_action(reader.exception() or Exception()):
                    raise reader.exception() from None
                raise
            finally:
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
        finally:
            self._fail_accept_waiter(ServerUnavailable("connection closed"))
            await ws.close()

    async def _ws_reader(self, ws) -> None:
        try:
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    log.warning("ignoring a frame that is not JSON")
                    continue
                self._handle_frame(frame)
        finally:  # a batch waiting for its accepted frame must not wait for a timeout
            self._fail_accept_waiter(ServerUnavailable("connection closed"))

    def _handle_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "reply":
            self._enqueue_reply(frame)
        elif kind == "replies":
            for reply in frame.get("replies") or []:
                self._enqueue_reply(reply)
        elif kind in ("accepted_batch", "accepted"):
            self._resolve_accepted(accepted_ids(frame), rejected=self._rejected(frame))
        elif kind == "hello":  # sent once this socket is the agent's current one
            self.standby = False
            if isinstance(frame.get("max_message_bytes"), int) and frame["max_message_bytes"] > 0:
                self._max_message_bytes = frame["max_message_bytes"]
            self._adopt_heartbeat_interval(frame.get("heartbeat_interval"))
        elif kind == "heartbeat_ok":
            self._adopt_heartbeat_interval(frame.get("interval"))
        elif kind == "error":
            self._handle_error_frame(frame)
        elif kind in ("resume", "hand_back"):
            chat = frame.get("chat") or frame.get("chat_name")
            if chat:
                self.takeover.resume(chat)
        else:
            log.debug("frame %s ignored", kind)

    def _handle_error_frame(self, frame: dict[str, Any]) -> None:
        code = frame.get("code")
        log.warning("server error frame: %s %s", code, str(frame.get("detail"))[:300])
        # `frame` names the frame type the error answers; without it the frame could not be read (or the server
        # predates it): that is the batch, the only large frame the agent sends.
        if frame.get("frame", "messages") not in ("messages", "message"):
            return
        rejected = self._rejected(frame)
        if rejected:
            self._resolve_accepted(set(), rejected=rejected)
        elif code in REFUSED_FOR_GOOD and ("frame" in frame or code in PARSE_REFUSALS):
            self._fail_accept_waiter(BatchRefused(f"{code}: {str(frame.get('detail'))[:300]}"))
        elif code in ("throttled", "server_error", "invalid"):
            # about the batch as a whole, for now: retry it (after Retry-After when throttled)
            self._fail_accept_waiter(
                ServerUnavailable(f"batch refused: {code}", retry_after=frame.get("retry_after") or 2.0)
            )

    def _rejected(self, frame: dict[str, Any]) -> dict[str, str]:
        """Items the server will never accept (validation errors), by client id (or by their index in the batch
        when the server could not echo the id): retrying them would block the queue."""
        ids = self._accept_waiter.ids if self._accept_waiter else []
        out = {}
        for error in frame.get("errors") or []:
            if not isinstance(error, dict):
                continue
            index = error.get("index")
            client_id = error.get("client_id")
            if not client_id and isinstance(index, int) and 0 <= index < len(ids):
                client_id = ids[index]
            if client_id:
                out[str(client_id)] = _reason(error.get("code", "invalid"), error.get("detail"))
        if frame.get("type") == "error" and frame.get("client_id") and frame.get("code") in REFUSED_FOR_GOOD:
            out[str(frame["client_id"])] = _reason(frame["code"], frame.get("detail"))
        return out

    def _resolve_accepted(self, ids: set[str], rejected: dict[str, str] | None = None) -> None:
        waiter = self._accept_waiter
        if waiter is None:
            return
        for client_id, reason in (rejected or {}).items():
            if client_id in waiter.waiting:
                waiter.rejected[client_id] = reason
        waiter.waiting -= ids | set(rejected or ())
        if not waiter.waiting and not waiter.future.done():
            waiter.future.set_result(True)

    def _fail_accept_waiter(self, exc: Exception) -> None:
        if self._accept_waiter is not None and not self._accept_waiter.future.done():
            self._accept_waiter.future.set_exception(exc)

    async def _flush_queue(self) -> None:
        """Send queued messages oldest first; each batch leaves the queue once the server has it, or has refused
        some of its messages for good (those go to the dead-letter file). A batch refused as a whole for good is
        halved until the message at fault is alone, and that one is set aside."""
        flushed = False
        while len(self.queue) and not self._stop.is_set():
            batch = self.queue.peek(self._batch_size)
            items = [message_item(item) for _, item in batch]
            try:
                rejected = await (self._send_batch_ws(items) if self.mode == "ws" else self._send_batch_rest(items))
            except BatchRefused as exc:
                if len(batch) > 1:
                    self._batch_size = max(1, len(batch) // 2)
                    continue
                rejected = {items[0]["id"]: str(exc)}
            except ServerUnavailable as exc:
                if exc.retry_after is None:
                    raise
                log.warning("%s; retrying in %.0f s", exc, exc.retry_after)
                await self._sleep(float(exc.retry_after))
                continue
            self._set_aside(batch, rejected)
            self.queue.ack(batch[-1][0])
            self.counters["processed"] += len(batch) - len(rejected)
            self._batch_size = self.config.server.batch_size
            flushed = True
        if flushed and not len(self.queue):
            await self._send_heartbeat()  # the backlog the server last heard of is gone

    async def _send_batch_ws(self, items: list[dict[str, Any]]) -> dict[str, str]:
        """One `messages` frame; the ids the server refused for good, with its reasons."""
        frame = self.client.encode({"type": "messages", "messages": items})
        if len(frame.encode("utf-8")) > self._max_message_bytes:
            raise BatchRefused(f"too_large: frame over the server's limit of {self._max_message_bytes} bytes")
        waiter = _AcceptWaiter([i["id"] for i in items], asyncio.get_running_loop().create_future())
        self._accept_waiter = waiter
        try:
            await self._send_encoded(frame)
            await asyncio.wait_for(waiter.future, timeout=self.config.server.timeout_s * 3)
        except TimeoutError as exc:
            raise ServerUnavailable("no accepted frame for a batch") from exc
        finally:
            self._accept_waiter = None
            if waiter.future.done() and not waiter.future.cancelled():
                waiter.future.exception()  # failed by the reader while the send failed too: already handled
        return waiter.rejected

    async def _send_batch_rest(self, items: list[dict[str, Any]]) -> dict[str, str]:
        ids, rejected = await self.client.post_messages(items)
        missing = {i["id"] for i in items} - ids - set(rejected)
        if missing:
            raise ServerUnavailable(f"{len(missing)} message(s) not confirmed")
        return rejected

    def _set_aside(self, batch: list[tuple[int, dict]], rejected: dict[str, str]) -> None:
        """Refused-for-good messages of a confirmed batch into the dead-letter file (before the queue lets go)."""
        for _, item in batch:
            reason = rejected.get(item["fingerprint"])
            if reason is not None:
                self.dead_letters.add(item, reason)
                self.counters["rejected"] += 1
                log.error("server refused message %s for good (%s); moved to the dead-letter file",
                          item["fingerprint"], reason[:200])  # fmt: skip

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        await self._send_encoded(self.client.encode(frame))

    async def _send_encoded(self, frame: str) -> None:
        ws = self._ws
        if ws is None:
            raise ServerUnavailable("not connected")
        async with self._ws_lock:
            await ws.send(frame)

    async def _on_connected(self) -> None:
        """Acks that could not be sent while offline, and takeovers seen meanwhile."""
        for reply_id, state in self.ledger.unacked():
            if state == SentLedger.SENDING and reply_id in self._inflight:
                continue  # being sent right now
            if state == SentLedger.SENDING:
                self.ledger.set(reply_id, SentLedger.FAILED)
                await self._ack(reply_id, ACK_FAILED, "agent stopped while sending; outcome unknown, not resent")
            else:
                await self._ack(reply_id, ACK_DELIVERED if state == SentLedger.SENT else ACK_FAILED, "")
        await self._send_control()
        await self._send_heartbeat()

    async def _send_control(self) -> None:
        """Takeovers seen meanwhile, over the WebSocket or its REST twin."""
        self._control_wake.clear()
        while self._pending_takeovers and self.mode in ("ws", "rest"):
            chat = self._pending_takeovers[0]
            if self.mode == "ws":
                await self._send_frame({"type": "takeover", "chat_name": chat, "active": True})
            else:
                await self.client.post_takeover(chat, True)
            self._pending_takeovers.pop(0)

    async def _rest_session(self, deadline: float | None) -> None:
        await self.client.access_token()
        self.mode = "rest"
        self.standby = False
        log.info("connected (REST fallback)")
        await self._on_connected()
        while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
            await self._flush_queue()
            await self._send_control()
            for reply in await self.client.fetch_outbox():
                self._enqueue_reply(reply)
            self._flush_wake.clear()
            await self._sleep(2.0, self._flush_wake, self._control_wake)

    # -- replies: server → WeChat ----------------------------------------------------------------
    def _enqueue_reply(self, frame: dict[str, Any]) -> None:
        reply_id = str(frame.get("reply_id") or frame.get("id") or "")
        if not reply_id or reply_id in self._inflight:
            return  # pushed again while we still hold it
        self._inflight.add(reply_id)
        self._replies.put_nowait(frame)

    async def _reply_loop(self) -> None:
        while not self._stop.is_set():
            frame = await self._replies.get()
            reply_id = str(frame.get("reply_id") or frame.get("id"))
            try:
                await self.handle_reply(frame)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad reply must not stop the others
                log.exception("reply %s: unexpected error", reply_id)
            finally:
                self._inflight.discard(reply_id)

    async def handle_reply(self, frame: dict[str, Any]) -> None:
        reply_id = str(frame.get("reply_id") or frame.get("id"))
        chat = frame.get("chat") or frame.get("chat_name") or ""
        text = frame.get("content") or ""
        at = frame.get("at") or None
        state = self.ledger.get(reply_id)
        if state is not None:  # seen before: never send again, just repeat the outcome
            if state == SentLedger.SENDING:
                self.ledger.set(reply_id, SentLedger.FAILED)
                await self._ack(reply_id, ACK_FAILED, "agent stopped while sending; outcome unknown, not resent")
            elif state in (SentLedger.SENT, SentLedger.ACKED_DELIVERED):
                await self._ack(reply_id, ACK_DELIVERED, "")
            else:
                await self._ack(reply_id, ACK_FAILED, "send failed earlier")
            return
        if not chat or not text:
            self.ledger.set(reply_id, SentLedger.FAILED)
            await self._ack(reply_id, ACK_FAILED, "reply without chat or content")
            return
        if self.takeover.paused(chat):
            self.ledger.set(reply_id, SentLedger.FAILED)
            await self._ack(reply_id, ACK_FAILED, "chat taken over by a person at the PC; not sent")
            return
        await self._sleep(self.policy.delay_for(text))
        if self._stop.is_set():
            return
        self.ledger.set(reply_id, SentLedger.SENDING)  # durable before the UI is touched
        error = ""
        try:
            await self._send_text(chat, text, at)
        except SendTimeout as exc:
            error = f"send timed out; outcome unknown, not resent ({exc})"
        except DriverError as exc:
            error = str(exc)
        self.policy.record()
        if error:
            self.counters["send_failures"] += 1
            self.ledger.set(reply_id, SentLedger.FAILED)
            log.warning("reply %s to %s failed: %s", reply_id, chat, error)
            await self._ack(reply_id, ACK_FAILED, error)
            return
        self.ledger.set(reply_id, SentLedger.SENT)
        self.counters["replies_sent"] += 1
        await self._ack(reply_id, ACK_DELIVERED, "")

    async def _send_text(self, chat: str, text: str, at: str | None) -> None:
        shown = f"@{at}\u2005{text}" if at else text
        self.takeover.expect_bot_send(chat, shown)  # before the send: its echo may be polled at once
        try:
            await asyncio.to_thread(self.driver.send_text, chat, text, at)
        except MentionError:
            # No member popup: nothing was sent. Mention by name in the text instead.
            log.info("@-mention unavailable in %s; mentioning %s in the text", chat, at)
            await asyncio.to_thread(self.driver.send_text, chat, f"@{at} {text}", None)

    async def _ack(self, reply_id: str, status: str, error: str) -> None:
        if self.mode == "offline":
            return  # the ledger keeps the outcome; acked on reconnect
        try:
            if self.mode == "ws":
                await self._send_frame({"type": "ack", "reply_id": _id(reply_id), "status": status, "error": error})
            else:
                await self.client.post_ack(reply_id, status, error)
        except Exception as exc:  # noqa: BLE001 - acked on reconnect
            log.info("ack of reply %s deferred: %s", reply_id, exc)
            return
        self.ledger.set(reply_id, SentLedger.ACKED_DELIVERED if status == ACK_DELIVERED else SentLedger.ACKED_FAILED)

    # -- heartbeat -------------------------------------------------------------------------------
    def _adopt_heartbeat_interval(self, seconds: Any) -> None:
        """The interval set in admin for this agent (the server's presence timeout is 3 of them)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            return
        seconds = min(HEARTBEAT_MAX_S, max(HEARTBEAT_MIN_S, float(seconds)))
        if seconds != self.heartbeat_s:
            log.info("heartbeat every %g s (was %g s), as the server asks", seconds, self.heartbeat_s)
            self.heartbeat_s = seconds
            self._heartbeat_wake.set()  # a shorter interval applies now, not after the current wait

    async def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            self._heartbeat_wake.clear()
            await self._sleep(self.heartbeat_s, self._heartbeat_wake)
            if self._heartbeat_wake.is_set():
                continue
            if self.mode != "offline":
                try:
                    await self.client.access_token()  # keep the JWT fresh: refreshed before it expires
                except Exception as exc:  # noqa: BLE001 - the connection loop deals with it
                    log.info("token refresh failed: %s", exc)
                await self._send_heartbeat()

    async def _send_heartbeat(self) -> None:
        data = self.heartbeat()
        try:
            if self.mode == "ws":
                await self._send_frame({"type": "heartbeat", **data})
            elif self.mode == "rest":
                answer = await self.client.post_heartbeat(data)
                self._adopt_heartbeat_interval(answer.get("interval") if isinstance(answer, dict) else None)
        except Exception as exc:  # noqa: BLE001
            log.info("heartbeat not sent: %s", exc)

    def heartbeat(self) -> dict[str, Any]:
        """What the server learns every heartbeat: no secret, no message content."""
        import psutil

        if self._proc is None:
            self._proc = psutil.Process()
            self._proc.cpu_percent(None)
        try:
            status = self.driver.status()
        except Exception as exc:  # noqa: BLE001
            status = {"wx_online": False, "error": str(exc)}
        try:
            disk = psutil.disk_usage(str(Path(self.config.state_dir).resolve())).percent
        except OSError:
            disk = None
        wx_online = bool(status.get("wx_online")) and not self._wx_error
        return {
            "cpu": round(self._proc.cpu_percent(None), 2),
            "memory": round(self._proc.memory_info().rss / 2**20, 2),
            "disk": disk,
            "wx_online": wx_online,
            "driver": self.driver.name,
            "agent_version": __version__,
            "versions": {
                "agent": __version__,
                "python": platform.python_version(),
                "wechat": str(status.get("wechat_version", "")),
                "os": platform.platform(terse=True),
            },
            "queue_size": len(self.queue),
            "dropped": self.queue.dropped,
            "dead_letters": len(self.dead_letters),
            "processed": self.counters["processed"],
            "send_failures": self.counters["send_failures"],
            "ui_latency_ms": status.get("ui_latency_ms"),
            "takeovers": self.counters["takeovers"],
            "paused_chats": len(self.takeover.paused_chats()),
            "uptime_s": round(time.time() - self._started_at),
            "pid": os.getpid(),
            "status": "ok" if wx_online else "degraded",
        }


def _reason(code: str, detail: Any) -> str:
    return f"{code}: {json.dumps(detail, ensure_ascii=False)}"


def _id(reply_id: str) -> int | str:
    return int(reply_id) if reply_id.isdigit() else reply_id
