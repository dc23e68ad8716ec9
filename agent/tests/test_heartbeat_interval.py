"""The heartbeat interval set in admin reaches the agent (`hello.heartbeat_interval`, `heartbeat_ok.interval`,
the REST answer's `interval`), and a flush that empties the queue is reported at once (against the fake server;
test_e2e_heartbeat.py runs the real one)."""

import asyncio
import math

import pytest

from agent.runtime import HEARTBEAT_MAX_S, HEARTBEAT_MIN_S
from agent.tests.conftest import agent_config, running_agent, wait_for
from agent.tests.fakeserver import FakeServer


async def test_the_agent_beats_at_the_interval_the_server_announces_and_follows_a_change(server, tmp_path):
    server.heartbeat_interval = 1
    async with running_agent(agent_config(tmp_path, server.url, heartbeat_s=60)) as (runtime, _):
        await wait_for(lambda: runtime.heartbeat_s == 1, timeout=5)
        await asyncio.sleep(3.5)
        assert len(server.heartbeats) >= 3  # the one on connect, then every second: not every 60 s
        server.heartbeat_interval = 30  # admin changed it: the next heartbeat's answer says so
        await wait_for(lambda: runtime.heartbeat_s == 30, timeout=3)
        counted = len(server.heartbeats)
        await asyncio.sleep(2.5)
        assert len(server.heartbeats) == counted


async def test_over_rest_the_heartbeat_answer_sets_the_interval(tmp_path):
    server = await FakeServer(ws_enabled=False).start()
    server.heartbeat_interval = 1
    try:
        config = agent_config(tmp_path, server.url, heartbeat_s=60, server={"transport": "rest"})
        async with running_agent(config) as (runtime, _):
            await wait_for(lambda: len(server.heartbeats) >= 3, timeout=6)
            assert runtime.mode == "rest" and runtime.heartbeat_s == 1
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("announced", "adopted"),
    [
        (0, 60),
        (-5, 60),
        ("5", 60),
        (True, 60),
        (None, 60),
        (math.nan, 60),
        (0.001, HEARTBEAT_MIN_S),
        (10**9, HEARTBEAT_MAX_S),
        (math.inf, HEARTBEAT_MAX_S),
        (15, 15),
    ],
)
async def test_a_nonsense_interval_is_ignored_and_an_extreme_one_bounded(server, tmp_path, announced, adopted):
    async with running_agent(agent_config(tmp_path, server.url, heartbeat_s=60)) as (runtime, _):
        runtime._handle_frame({"type": "heartbeat_ok", "interval": announced})
        assert runtime.heartbeat_s == adopted


async def test_a_flush_that_empties_the_queue_is_reported_at_once(tmp_path):
    server = FakeServer()  # down while messages queue up
    server.heartbeat_interval = 600
    async with running_agent(agent_config(tmp_path, server.url, heartbeat_s=600)) as (runtime, sim):
        for i in range(300):
            sim.inject(f"客户{i % 5}", f"消息 {i}", msg_id=f"m{i}")
        await wait_for(lambda: len(runtime.queue) == 300)
        await server.start()
        try:
            await wait_for(lambda: len(server.messages) == 300, timeout=20)
            # without waiting the 600 s interval: the backlog the server heard of on connect is gone
            await wait_for(lambda: server.heartbeats and server.heartbeats[-1]["queue_size"] == 0, timeout=5)
            assert server.heartbeats[0]["queue_size"] > 0
        finally:
            await server.stop()
