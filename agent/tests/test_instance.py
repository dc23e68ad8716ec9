"""One agent process per state directory (a real second `python -m agent`), the installation id, and what the
agent does on the one-sender close codes."""

import asyncio
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agent.client import ServerClient, close_action
from agent.config import ServerConfig
from agent.instance import AlreadyRunning, StateDirLock, installation_id
from agent.tests.conftest import agent_config, running_agent, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _agent(tmp_path: Path, state: Path) -> subprocess.Popen:
    """`python -m agent` (simulator) against a port nothing listens on: it runs, holding its state directory."""
    config = tmp_path / f"{state.name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"url": "http://127.0.0.1:9", "agent_id": "agt_lock", "secret": "k" * 32},
                "driver": {"name": "simulator", "options": {"script": None}},
                "state_dir": str(state),
                "poll_interval_s": 0.05,
                "log": {"file": str(state / "agent.log")},
            }
        ),
        encoding="utf-8",
    )
    argv = [sys.executable, "-m", "agent", "--config", str(config)]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_running(proc: subprocess.Popen, state: Path) -> None:
    deadline = time.monotonic() + 30
    while not (state / "status.json").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "agent did not start"
        time.sleep(0.05)


def test_a_second_process_on_the_same_state_dir_exits_at_once_and_the_first_keeps_running(tmp_path):
    state = tmp_path / "state"
    first = _agent(tmp_path, state)
    try:
        _wait_running(first, state)
        started = time.monotonic()
        second = _agent(tmp_path, state)
        _, err = second.communicate(timeout=30)
        elapsed = time.monotonic() - started
        other_dir = _agent(tmp_path, tmp_path / "other-state")  # another state directory is not locked
        _wait_running(other_dir, tmp_path / "other-state")
        other_dir.terminate()
        assert other_dir.wait(15) == 0
        assert first.poll() is None  # the first one was not disturbed
    finally:
        first.send_signal(signal.SIGKILL)  # the OS releases the lock however the holder ends
        first.wait(15)
    message = err.decode("utf-8")
    assert second.returncode == 3 and elapsed < 15
    assert "另一个客服终端进程正在使用状态目录" in message and "Another agent process is already using" in message
    assert f"pid {first.pid}" in message
    assert (state / "agent.log").read_text(encoding="utf-8").count("agent agt_lock started") == 1  # not the second
    restarted = _agent(tmp_path, state)  # after kill -9: the lock died with its process
    try:
        _wait_running(restarted, state)
        assert restarted.poll() is None
    finally:
        restarted.terminate()
        restarted.wait(15)


def test_the_lock_is_exclusive_until_released(tmp_path):
    lock = StateDirLock(tmp_path).acquire()
    with pytest.raises(AlreadyRunning):
        StateDirLock(tmp_path).acquire()
    lock.release()
    StateDirLock(tmp_path).acquire().release()


def test_the_installation_id_is_stable_and_a_copied_folder_is_another_installation(tmp_path):
    original = tmp_path / "agent" / "state"
    first = installation_id(original)
    assert installation_id(original) == first and len(first) == 32
    shutil.copytree(tmp_path / "agent", tmp_path / "agent-copy")
    assert installation_id(tmp_path / "agent-copy" / "state") != first


class _Closed(Exception):
    def __init__(self, code):
        self.rcvd = type("Close", (), {"code": code})()


def test_replaced_and_refused_sockets_stand_by_keeping_the_tokens():
    assert close_action(_Closed(4408)) == close_action(_Closed(4423)) == "standby"
    client = ServerClient(ServerConfig(url="http://x", agent_id="a", secret="s" * 32), instance="i" * 32)
    client._access, client._refresh = "access", "refresh"
    client.prepare_reconnect("standby")
    assert (client._access, client._refresh) == ("access", "refresh")


async def test_refused_as_a_second_installation_mid_batch_the_agent_stands_by_and_keeps_its_tokens(
    server, tmp_path, caplog
):
    server.refuse_batches_with = 4423
    config = agent_config(tmp_path, server.url, reconnect={"initial_s": 0.05, "max_s": 2.0})
    with caplog.at_level(logging.ERROR):
        async with running_agent(config) as (runtime, driver):
            driver.inject("张三", "在吗")
            await wait_for(lambda: runtime.standby)
            await asyncio.sleep(0.8)  # fast backoff would have reconnected several times by now
            assert server.ws_connections == 1 and runtime.status()["standby"] is True
            server.refuse_batches_with = None  # the other process stopped: this one takes over
            await wait_for(lambda: "在吗" in [m["content"] for m in server.messages.values()], timeout=5)
            assert runtime.standby is False
    assert server.logins == 1  # the tokens were kept
    assert len(set(server.instances)) == 1 and len(server.instances[0]) == 32
    assert "another agent process with the same credentials" in caplog.text and "另一个使用相同凭据" in caplog.text
