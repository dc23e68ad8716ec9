"""Heartbeats and presence: what supervisors see of each agent."""

import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from apps.agents import auth, selectors, services
from apps.agents.models import Agent
from apps.agents.tests.factories import AgentFactory

pytestmark = pytest.mark.django_db(transaction=True)  # token checks read the enabled agents on another thread


def heartbeat(agent: Agent, payload: dict):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {auth.issue_tokens(agent.id)['access_token']}")
    return client.post("/api/v1/heartbeat", payload, format="json")


def test_heartbeat_records_the_agents_state_and_answers_the_interval():
    agent = AgentFactory(online=False)
    response = heartbeat(agent, {"cpu": 3.5, "wx_online": True, "queue_size": 2, "agent_version": "1.4.0"})
    assert response.status_code == 200, response.content
    assert response.json()["presence"] == "online" and response.json()["interval"] == agent.heartbeat_interval
    agent.refresh_from_db()
    assert agent.presence == "online" and agent.last_heartbeat == {"cpu": 3.5, "wx_online": True, "queue_size": 2,
                                                                   "agent_version": "1.4.0"}  # fmt: skip
    assert agent.agent_version == "1.4.0"


def test_wechat_logged_out_shows_the_agent_degraded():
    agent = AgentFactory()
    assert heartbeat(agent, {"wx_online": False}).json()["presence"] == "degraded"
    assert Agent.objects.get(pk=agent.pk).presence == "degraded"


def test_a_bad_heartbeat_is_refused_and_changes_nothing():
    agent = AgentFactory(queue_size=7)
    response = heartbeat(agent, {"queue_size": -1, "status": "exploded"})
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert set(response.json()["detail"]) >= {"queue_size", "status"}
    assert Agent.objects.get(pk=agent.pk).last_heartbeat == {"queue_size": 7}


def test_presence_goes_offline_after_three_silent_intervals():
    agent = AgentFactory()
    agent.last_seen = timezone.now() - timedelta(seconds=agent.heartbeat_interval * 3 + 1)
    assert agent.presence == "offline"
    agent.last_seen = timezone.now()
    assert agent.presence == "online"


def test_enabled_agents_reading_for_monitoring():
    AgentFactory(id="agt_on", queue_size=42)
    AgentFactory(id="agt_off", online=False)
    disabled = AgentFactory(id="agt_disabled")
    Agent.objects.filter(pk=disabled.pk).update(is_active=False)
    readings = {agent["id"]: agent for agent in selectors.enabled_agents()}
    assert set(readings) == {"agt_on", "agt_off"}
    assert readings["agt_on"]["presence"] == "online" and readings["agt_on"]["queue_size"] == 42
    assert readings["agt_off"]["presence"] == "offline" and readings["agt_off"]["queue_size"] == 0


def test_agent_admin_lists_presence_and_queue():
    AgentFactory(name="前台电脑", queue_size=12)
    client = APIClient()
    client.force_login(get_user_model().objects.create_superuser("boss", password="x-Pa55-word"))
    page = client.get("/admin/agents/agent/").content.decode()
    assert "前台电脑" in page and "在线" in page and ">12<" in page
    assert client.get("/admin/agents/agent/add/").status_code == 403  # agents are created by the command


def _open(agent: Agent, name: str, for_seconds: float = 600) -> str:
    socket = f"test.{agent.id}.{name}"
    services.socket_opened(agent.id, socket, time.time() + for_seconds)
    return socket


def test_an_agent_is_offline_once_its_last_socket_closes_and_not_before():
    agent = AgentFactory(online=False)
    first, second = _open(agent, "a"), _open(agent, "b")
    assert Agent.objects.get(pk=agent.pk).presence == "online"
    assert services.socket_closed(agent.id, first) is False
    assert Agent.objects.get(pk=agent.pk).presence == "online"
    assert services.socket_closed(agent.id, second) is True
    assert Agent.objects.get(pk=agent.pk).presence == "offline"  # at once, not 3 heartbeat intervals later
    assert services.socket_closed(agent.id, second) is False  # a repeated close changes nothing


def test_a_socket_left_by_a_killed_web_process_lapses_at_its_token_expiry():
    agent = AgentFactory(online=False)
    _open(agent, "on-a-dead-process", for_seconds=-1)  # its token has expired: it cannot be open any more
    live = _open(agent, "live")
    assert services.socket_closed(agent.id, live) is True
    assert Agent.objects.get(pk=agent.pk).presence == "offline"


def test_a_socket_that_opened_while_the_last_one_closed_keeps_the_agent_online():
    agent = AgentFactory(online=False)
    closing = _open(agent, "closing")
    # the new socket's login was recorded after this close began (its Redis entry came just after the count)
    Agent.objects.filter(pk=agent.pk).update(last_seen=timezone.now() + timedelta(seconds=1))
    assert services.socket_closed(agent.id, closing) is False
    assert Agent.objects.get(pk=agent.pk).presence == "online"


def test_a_heartbeat_reports_degraded_and_a_later_one_online_again():
    agent = AgentFactory()
    services.record_heartbeat(agent.id, {"wx_online": False})
    assert Agent.objects.get(pk=agent.pk).presence == "degraded"
    assert selectors.enabled_agents()[0]["presence"] == "degraded"
    services.record_heartbeat(agent.id, {"wx_online": True, "status": "ok"})
    assert Agent.objects.get(pk=agent.pk).presence == "online"
