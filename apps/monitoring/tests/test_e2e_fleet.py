"""The fleet as supervisors see it, through a real Daphne (Redis channel layer, PostgreSQL): an agent whose last
socket closes is offline within 5 s in admin and on the dashboard, not 3 heartbeat intervals later, and stays
online while another socket of it is open; two agents going away give two alert events, each naming its agent."""

import asyncio
import time

import pytest
import websockets
from django.contrib.auth import get_user_model
from django.test import Client

from apps.agents import auth
from apps.agents.models import Agent
from apps.agents.tests.factories import AgentFactory
from apps.core.testing import start_daphne
from apps.messages.testing import recv_until, ws_connect
from apps.monitoring import services
from apps.monitoring.models import AlertEvent, AlertRule
from apps.monitoring.tests.factories import AlertRuleFactory, NotificationChannelFactory
from apps.monitoring.tests.receiver import Receiver
from conftest import requires_services

pytestmark = [pytest.mark.e2e, requires_services]


@pytest.fixture
def daphne(live_env, tmp_path):
    process, base_url = start_daphne(live_env, tmp_path)
    yield base_url
    process.stop()


def presence(agent_id: str) -> str:
    return str(Agent.objects.get(pk=agent_id).presence)


async def seconds_until(predicate, within: float = 10.0) -> float:
    started = time.monotonic()
    while not await asyncio.to_thread(predicate):
        if time.monotonic() - started > within:
            raise AssertionError(f"not reached in {within} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def stays(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not await asyncio.to_thread(predicate):
            return False
        await asyncio.sleep(0.1)
    return True


async def connected(base_url: str, agent_id: str):
    ws = await ws_connect(base_url, auth.issue_tokens(agent_id)["access_token"])
    await recv_until(ws, lambda frame: frame["type"] == "hello")
    return ws


def test_presence_is_offline_within_5_seconds_of_the_last_socket_closing(daphne):
    agent = AgentFactory(online=False, name="前台电脑")  # heartbeat interval 30 s: the timeout alone would take 90 s

    async def scenario():
        first = await connected(daphne, agent.id)
        await seconds_until(lambda: presence(agent.id) == "online")
        second = await ws_connect(daphne, auth.issue_tokens(agent.id)["access_token"])
        try:  # one socket per agent may be enforced (the first or the second closed): either way, one stays open
            await recv_until(second, lambda frame: frame["type"] == "hello", within=3)
        except (TimeoutError, websockets.ConnectionClosed):
            pass
        await asyncio.sleep(1)
        open_sockets = [ws for ws in (first, second) if ws.close_code is None]
        assert open_sockets and await stays(lambda: presence(agent.id) == "online", 2)
        for ws in open_sockets[:-1]:  # not the last one: the agent stays online
            await ws.close()
            assert await stays(lambda: presence(agent.id) == "online", 2)
        await open_sockets[-1].close()
        return await seconds_until(lambda: presence(agent.id) == "offline")

    took = asyncio.run(scenario())
    assert took < 5, took
    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser("boss", password="x-Pa55-word"))
    page = admin.get("/admin/agents/agent/").content.decode()
    assert "前台电脑" in page and "离线" in page and "在线" not in page.split("前台电脑", 1)[1].split("</tr>", 1)[0]
    cards = services.dashboard_snapshot()["cards"]
    assert (cards["active_agents"], cards["agents"]) == (0, 1)


def test_two_agents_disconnecting_fire_two_alert_events_each_naming_its_agent(daphne):
    with Receiver() as receiver:
        channel = NotificationChannelFactory(target=receiver.url)
        AlertRuleFactory(name="终端离线", metric=AlertRule.Metric.AGENTS_OFFLINE, threshold=0, channels=[channel])
        agents = [AgentFactory(name="前台电脑"), AgentFactory(name="仓库电脑")]

        async def scenario():
            sockets = [await connected(daphne, agent.id) for agent in agents]
            for agent in agents:
                await seconds_until(lambda agent=agent: presence(agent.id) == "online")
            assert await asyncio.to_thread(services.evaluate_rules) == []
            for ws, agent in zip(sockets, agents, strict=True):
                await ws.close()
                await seconds_until(lambda agent=agent: presence(agent.id) == "offline", within=5)
            return await asyncio.to_thread(services.evaluate_rules)

        changes = asyncio.run(scenario())
        assert [kind for _, kind in changes] == ["fired", "fired"]
        for event_id, kind in changes:
            services.notify_event(event_id, kind)
        titles = sorted(request["body"]["title"] for request in receiver.wait_for(2))
        assert titles == sorted(f"告警触发：终端离线：{agent.name}（{agent.id}）" for agent in agents)
        assert sorted(AlertEvent.objects.values_list("agent_id", flat=True)) == sorted(a.id for a in agents)
