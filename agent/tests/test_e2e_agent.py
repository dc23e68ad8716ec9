"""End to end: the real agent process (`python -m agent`, simulator driver) against the real server
(Daphne, a Celery worker, PostgreSQL, Redis; the test workers' echo engine answers "收到：<text>").

The simulator is fed through its inbox file and every send is appended to its outbox file, so both
outlive a kill -9 of the agent and the test can count what WeChat really got.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from agent.drivers.simulator import append_inbox, read_outbox
from conftest import requires_services

pytestmark = [pytest.mark.e2e, requires_services]

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not reached in {timeout}s")


class AgentProcess:
    """`python -m agent --config …` with the simulator driver, as a separate process."""

    def __init__(
        self,
        tmp_path: Path,
        base_url: str,
        agent_id: str,
        secret: str,
        *,
        min_gap_s: float = 0.0,
        transport: str = "auto",
    ):
        self.dir = tmp_path / "agent"
        self.dir.mkdir(exist_ok=True)
        self.inbox = self.dir / "inbox.jsonl"
        self.outbox = self.dir / "outbox.jsonl"
        self.config = self.dir / "agent.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "server": {
                        "url": base_url,
                        "agent_id": agent_id,
                        "secret_env": "WXCS_AGENT_SECRET",
                        "timeout_s": 5,
                        "transport": transport,
                    },
                    "driver": {
                        "name": "simulator",
                        "options": {
                            "inbox_path": str(self.inbox),
                            "outbox_path": str(self.outbox),
                            "script": None,
                            "self_name": "客服小王",
                        },
                    },
                    "pacing": {
                        "min_gap_s": min_gap_s,
                        "typing_s_per_char": 0,
                        "max_typing_s": 0,
                        "jitter_s": 0,
                        "per_minute_cap": 0,
                        "daily_cap": 0,
                    },
                    "state_dir": str(self.dir / "state"),
                    "heartbeat_s": 2,
                    "poll_interval_s": 0.05,
                    "reconnect": {"initial_s": 0.2, "max_s": 1.0},
                    "log": {"file": str(self.dir / "state" / "agent.log"), "level": "INFO"},
                },
                allow_unicode=True,
            ),
            encoding="utf-8",
        )
        self.env = {**os.environ, "WXCS_AGENT_SECRET": secret, "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self) -> "AgentProcess":
        self.runs += 1
        log = open(self.dir / f"stdout-{self.runs}.log", "wb")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(self.config)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self.status().get("pid") == self.proc.pid, 30, what="agent start")
        return self

    def status(self) -> dict:
        try:
            return json.loads((self.dir / "state" / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def inject(self, chat: str, text: str, **kwargs) -> None:
        append_inbox(self.inbox, chat=chat, text=text, **kwargs)

    def sent(self) -> list[dict]:
        return read_outbox(self.outbox)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.dir.glob("stdout-*.log")))


@pytest.fixture
def agent_account(transactional_db):
    from apps.agents.services import create_agent

    agent, secret = create_agent("e2e 客服终端")
    return agent.id, secret


@pytest.fixture
def daphne_restarter(live_server_stack, live_env, tmp_path):
    """stop() takes the server's Daphne down; start() brings a new one up on the same port. Every
    Daphne started here is stopped at the end of the test."""
    from apps.core.testing import Process, wait_until_http_ok

    base_url, processes = live_server_stack
    argv = list(processes["daphne"].popen.args)
    started: list[Process] = []

    class Restarter:
        def stop(self):
            for process in [processes["daphne"], *started]:
                process.stop()

        def start(self):
            process = Process(f"daphne-{len(started) + 2}", argv, live_env, tmp_path)
            started.append(process)
            wait_until_http_ok(f"{base_url}/healthz", process)

    yield Restarter()
    for process in started:
        process.stop()


def replies_of(agent_id: str):
    from apps.messages.models import Reply

    return Reply.objects.filter(agent_id=agent_id)


def test_customer_message_answered_through_wechat_group_reply_mentions_sender(
    live_server_stack, agent_account, tmp_path
):
    base_url, _ = live_server_stack
    agent_id, secret = agent_account
    agent = AgentProcess(tmp_path, base_url, agent_id, secret).start()
    try:
        agent.inject("张三", "你好，我的订单发货了吗？")
        agent.inject("渝A车友售后群", "保养一次多少钱？", sender="李四", kind="group")
        agent.inject("渝A车友售后群", "今天天气不错", sender="王五", kind="group", mention=False)  # not for us
        sent = wait_for(lambda: len(agent.sent()) >= 2 and agent.sent(), what="two replies in WeChat")
        wait_for(lambda: replies_of(agent_id).filter(status="delivered").count() == 2, what="acks")
        # a person types in WeChat on the PC: the server hears of the takeover
        from apps.messages.models import Conversation

        agent.inject("张三", "我是店长，我来跟进", origin="self", sender="客服小王")
        wait_for(
            lambda: Conversation.objects.filter(agent_id=agent_id, chat_name="张三", taken_over=True).exists(),
            what="takeover reported",
        )
        time.sleep(0.5)
    finally:
        agent.stop()
    by_chat = {s["chat"]: s for s in agent.sent()}
    assert len(agent.sent()) == 2  # the bot's own replies were not taken for a person typing
    assert not Conversation.objects.filter(agent_id=agent_id, chat_name="渝A车友售后群", taken_over=True).exists()
    assert by_chat["张三"]["text"] == "收到：你好，我的订单发货了吗？" and by_chat["张三"]["at"] == []
    group = by_chat["渝A车友售后群"]
    assert group["text"] == "收到：保养一次多少钱？" and group["at"] == ["李四"]
    assert group["shown"] == "@李四\u2005收到：保养一次多少钱？"
    from apps.agents.models import Agent
    from apps.messages.models import Conversation, Message

    stored = Message.objects.get(agent_id=agent_id, conversation__chat_name="渝A车友售后群")
    assert stored.is_at_me is True and stored.content == "保养一次多少钱？" and stored.sender == "李四"
    heartbeat = Agent.objects.get(pk=agent_id).last_heartbeat
    assert heartbeat["driver"] == "simulator" and heartbeat["wx_online"] is True
    assert secret not in json.dumps(heartbeat) and secret not in agent.log_text()
    assert sent  # the outbox file was written by the agent process itself


@pytest.mark.timeout(600)
def test_server_down_200_messages_then_up_all_delivered_in_order_each_reply_once(
    live_server_stack, daphne_restarter, agent_account, tmp_path
):
    base_url, _ = live_server_stack
    agent_id, secret = agent_account
    agent = AgentProcess(tmp_path, base_url, agent_id, secret).start()
    try:
        wait_for(lambda: agent.status().get("mode") == "ws", what="agent connected")
        daphne_restarter.stop()
        wait_for(lambda: agent.status().get("mode") == "offline", what="agent offline")
        for i in range(200):
            agent.inject(f"客户{i % 10:02d}", f"第 {i:03d} 条", msg_id=f"down-{i}")
        wait_for(lambda: agent.status().get("queue_size") == 200, what="200 queued")
        daphne_restarter.start()
        wait_for(
            lambda: replies_of(agent_id).filter(status="delivered").count() == 200, 120, what="200 replies delivered"
        )
        time.sleep(1.0)  # anything sent twice would show up now
    finally:
        agent.stop()
    from apps.messages.models import Message

    contents = list(Message.objects.filter(agent_id=agent_id).order_by("id").values_list("content", flat=True))
    assert contents == [f"第 {i:03d} 条" for i in range(200)]  # all delivered, in order
    sent = Counter(s["text"] for s in agent.sent())
    assert len(sent) == 200 and set(sent.values()) == {1}  # every reply sent exactly once
    for chat in {f"客户{i:02d}" for i in range(10)}:  # and in order within each chat
        texts = [s["text"] for s in agent.sent() if s["chat"] == chat]
        assert texts == sorted(texts)
    assert agent.status()["queue_size"] == 0


@pytest.mark.timeout(600)
def test_kill_9_with_messages_queued_and_while_sending_none_lost_none_sent_twice(
    live_server_stack, daphne_restarter, agent_account, tmp_path
):
    base_url, _ = live_server_stack
    agent_id, secret = agent_account
    agent = AgentProcess(tmp_path, base_url, agent_id, secret, min_gap_s=0.05).start()
    try:
        # 1. server down, messages queued, kill -9, server up, restart: none lost
        wait_for(lambda: agent.status().get("mode") == "ws", what="agent connected")
        daphne_restarter.stop()
        for i in range(40):
            agent.inject(f"客户{i % 4}", f"离线 {i:02d}", msg_id=f"q-{i}")
        wait_for(lambda: agent.status().get("queue_size") == 40, what="40 queued")
        agent.kill9()
        daphne_restarter.start()
        agent.start()
        wait_for(lambda: replies_of(agent_id).filter(status="delivered").count() == 40, 90, what="40 delivered")
        # 2. kill -9 in the middle of sending replies, restart: none sent twice
        for i in range(60):
            agent.inject(f"客户{i % 4}", f"在线 {i:02d}", msg_id=f"o-{i}")
        wait_for(lambda: len(agent.sent()) >= 40 + 15, 60, interval=0.01, what="sending under way")
        agent.kill9()
        agent.start()
        wait_for(
            lambda: (
                not replies_of(agent_id).filter(status__in=("queued", "sent", "pending_review")).exists()
                and replies_of(agent_id).count() == 100
            ),
            120,
            what="every reply acked",
        )
        time.sleep(1.0)
    finally:
        agent.stop()
    from apps.messages.models import Message

    contents = set(Message.objects.filter(agent_id=agent_id).values_list("content", flat=True))
    assert contents == {f"离线 {i:02d}" for i in range(40)} | {f"在线 {i:02d}" for i in range(60)}  # none lost
    sent = Counter(s["text"] for s in agent.sent())
    assert set(sent.values()) == {1}, [t for t, n in sent.items() if n > 1]  # none sent twice
    delivered = replies_of(agent_id).filter(status="delivered").count()
    failed = list(replies_of(agent_id).filter(status="failed").values_list("delivery_error", flat=True))
    # at most the one reply the kill interrupted mid-send is reported failed (at-most-once), never resent
    assert delivered + len(failed) == 100 and len(failed) <= 1
    assert all("outcome unknown" in error for error in failed)
    assert delivered <= len(sent) <= delivered + len(failed)


def test_simulate_mode_with_the_demo_credentials_file(live_server_stack, agent_account, tmp_path):
    """What `make run` starts: `python -m agent --simulate` reading var/demo_agent.json as
    apps/agents/demo.py writes it (agent_id, api_key, server_url, ws_url)."""
    base_url, _ = live_server_stack
    agent_id, secret = agent_account
    creds = tmp_path / "demo_agent.json"
    creds.write_text(
        json.dumps(
            {
                "agent_id": agent_id,
                "api_key": secret,
                "server_url": base_url,
                "ws_url": base_url.replace("http://", "ws://") + "/ws/agent/",
            }
        ),
        encoding="utf-8",
    )
    inbox, outbox = tmp_path / "inbox.jsonl", tmp_path / "outbox.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "--simulate",
            "--no-script",
            "--no-pacing",
            "--credentials",
            str(creds),
            "--state-dir",
            str(tmp_path / "state"),
            "--inbox",
            str(inbox),
            "--outbox",
            str(outbox),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        append_inbox(inbox, chat="演示客户", text="你们几点下班？")
        wait_for(lambda: read_outbox(outbox), what="the reply in the simulator")
    finally:
        proc.terminate()
        proc.wait(15)
    assert read_outbox(outbox)[0]["text"] == "收到：你们几点下班？"
    assert proc.returncode == 0  # SIGTERM: a clean stop


def test_rest_fallback_against_the_real_server(live_server_stack, agent_account, tmp_path):
    """transport: rest — POST /api/v1/messages, GET /api/v1/replies, POST /api/v1/replies/<id>/ack,
    POST /api/v1/heartbeat, through the standard library's urllib."""
    base_url, _ = live_server_stack
    agent_id, secret = agent_account
    agent = AgentProcess(tmp_path, base_url, agent_id, secret, transport="rest").start()
    try:
        agent.inject("张三", "走 REST 的消息")
        agent.inject("渝A车友售后群", "REST 群消息", sender="李四", kind="group")
        wait_for(lambda: replies_of(agent_id).filter(status="delivered").count() == 2, what="REST round trip")
        wait_for(lambda: agent.status().get("mode") == "rest", what="REST mode")
    finally:
        agent.stop()
    from apps.agents.models import Agent

    by_chat = {s["chat"]: s for s in agent.sent()}
    assert by_chat["张三"]["text"] == "收到：走 REST 的消息"
    assert by_chat["渝A车友售后群"]["at"] == ["李四"]
    assert Agent.objects.get(pk=agent_id).last_heartbeat["driver"] == "simulator"


def test_a_message_the_real_server_refuses_is_set_aside_and_counted_in_admin(
    live_server_stack, agent_account, tmp_path
):
    """A NUL in a customer's text (refused per message by the server): the agent moves it to its dead-letter file,
    the messages around it are answered, and the count reaches admin through the heartbeat."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from apps.agents.models import Agent

    base_url, _ = live_server_stack
    agent_id, secret = agent_account
    agent = AgentProcess(tmp_path, base_url, agent_id, secret, transport="ws").start()
    try:
        agent.inject("张三", "第一条")
        agent.inject("张三", "坏\x00消息")
        agent.inject("张三", "第三条")
        wait_for(lambda: len(agent.sent()) == 2, what="two replies in WeChat")
        wait_for(lambda: agent.status().get("dead_letters") == 1 and agent.status().get("queue_size") == 0)
        wait_for(
            lambda: (Agent.objects.get(pk=agent_id).last_heartbeat or {}).get("dead_letters") == 1,
            what="the count in the heartbeat",
        )
    finally:
        agent.stop()
    assert sorted(s["text"] for s in agent.sent()) == ["收到：第一条", "收到：第三条"]
    assert "moved to the dead-letter file" in agent.log_text()
    staff = Client()
    staff.force_login(get_user_model().objects.create_superuser("boss", password="x-Pa55-word"))
    listing = staff.get("/admin/agents/agent/").content.decode()
    assert "被拒消息" in listing and 'class="field-dead_letters">1<' in listing
    assert 'class="readonly">1<' in staff.get(f"/admin/agents/agent/{agent_id}/change/").content.decode()


@pytest.mark.timeout(300)
def test_two_processes_with_one_credential_never_send_a_reply_twice(live_server_stack, agent_account, tmp_path):
    """A copied folder started beside the original (its own state directory, the same WeChat and credentials):
    the server keeps the first process's socket and refuses the second (4423), which stands by; when the first
    stops, the second takes over. Every reply reaches WeChat once in total, whichever process sent it."""
    base_url, _ = live_server_stack
    agent_id, secret = agent_account
    (tmp_path / "original").mkdir()
    (tmp_path / "copy").mkdir()
    original = AgentProcess(tmp_path / "original", base_url, agent_id, secret, transport="ws").start()
    copy = None
    try:
        wait_for(lambda: original.status().get("mode") == "ws", what="the original connected")
        copy = AgentProcess(tmp_path / "copy", base_url, agent_id, secret, transport="ws").start()
        wait_for(lambda: copy.status().get("standby") is True, 30, what="the copy refused and standing by")
        for i in range(30):  # both see the same WeChat: the same messages, the same fingerprints
            for process in (original, copy):
                process.inject(f"客户{i % 5}", f"问题 {i:02d}", msg_id=f"same-{i}")
        wait_for(lambda: replies_of(agent_id).filter(status="delivered").count() == 30, 90, what="30 delivered")
        time.sleep(2.0)  # a second send would show up now
        assert copy.sent() == [] and copy.status().get("standby") is True
        original.stop()  # the original ends: the copy takes over within its reconnect delay
        wait_for(lambda: copy.status().get("mode") == "ws", 30, what="the copy took over")
        for i in range(30, 40):
            copy.inject(f"客户{i % 5}", f"问题 {i:02d}", msg_id=f"same-{i}")
        wait_for(lambda: replies_of(agent_id).filter(status="delivered").count() == 40, 90, what="40 delivered")
        time.sleep(2.0)
    finally:
        original.stop()
        if copy is not None:
            copy.stop()
    sent = Counter(s["text"] for s in original.sent() + copy.sent())
    assert sent == Counter({f"收到：问题 {i:02d}": 1 for i in range(40)})  # every reply once in total
    assert len(original.sent()) == 30 and len(copy.sent()) == 10
    assert "另一个使用相同凭据的客服终端进程" in copy.log_text() and "standing by" in copy.log_text()
