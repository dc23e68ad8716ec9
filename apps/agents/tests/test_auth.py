import time
from io import StringIO

import jwt
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from apps.agents import auth
from apps.agents.models import Agent
from apps.agents.services import create_agent

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent():
    return create_agent("测试终端")


def test_create_agent_command_prints_id_and_secret_once():
    out = StringIO()
    call_command("create_agent", "前台一号", stdout=out)
    text = out.getvalue()
    agent = Agent.objects.get(name="前台一号")
    assert agent.id in text
    secret = text.split("api_key:")[1].split()[0]
    assert secret not in agent.secret_hash and agent.secret_hash.startswith("pbkdf2_")
    assert auth.verify_secret(agent, secret)


def test_login_refresh_and_heartbeat(agent):
    agent, secret = agent
    client = APIClient()
    resp = client.post("/api/v1/auth/login", {"agent_id": agent.id, "api_key": secret}, format="json")
    assert resp.status_code == 200, resp.content
    tokens = resp.json()
    assert set(tokens) >= {"access_token", "refresh_token", "expires_in"}
    resp = client.post("/api/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]}, format="json")
    assert resp.status_code == 200
    # an access token is not a refresh token
    assert (
        client.post("/api/v1/auth/refresh", {"refresh_token": tokens["access_token"]}, format="json").status_code == 401
    )
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")
    resp = client.post("/api/v1/heartbeat", {"cpu": 3.5, "wx_online": True, "queue_size": 2}, format="json")
    assert resp.status_code == 200, resp.content
    agent.refresh_from_db()
    assert agent.presence == "online" and agent.last_heartbeat["queue_size"] == 2


def test_bad_credentials_and_tokens_are_401(agent):
    agent, secret = agent
    client = APIClient()
    assert (
        client.post("/api/v1/auth/login", {"agent_id": agent.id, "api_key": "nope"}, format="json").status_code == 401
    )
    assert (
        client.post("/api/v1/auth/login", {"agent_id": "agt_missing", "api_key": secret}, format="json").status_code
        == 401
    )
    assert client.post("/api/v1/auth/login", {}, format="json").status_code == 400
    assert client.post("/api/v1/heartbeat", {}, format="json").status_code == 401  # missing
    client.credentials(HTTP_AUTHORIZATION="Bearer garbage")
    assert client.post("/api/v1/heartbeat", {}, format="json").status_code == 401  # malformed
    expired = jwt.encode(
        {"sub": agent.id, "typ": "access", "exp": int(time.time()) - 5}, auth.signing_key(), algorithm="HS256"
    )
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {expired}")
    resp = client.post("/api/v1/heartbeat", {}, format="json")
    assert resp.status_code == 401 and resp.json()["detail"]
    forged = jwt.encode(
        {"sub": agent.id, "typ": "access", "exp": int(time.time()) + 60},
        "wrong-key-of-thirty-two-bytes-long!!",
        algorithm="HS256",
    )
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {forged}")
    assert client.post("/api/v1/heartbeat", {}, format="json").status_code == 401


def test_disabled_agent_cannot_log_in(agent):
    agent, secret = agent
    Agent.objects.filter(pk=agent.pk).update(is_active=False)
    auth.forget(agent.id)
    resp = APIClient().post("/api/v1/auth/login", {"agent_id": agent.id, "api_key": secret}, format="json")
    assert resp.status_code == 401


def test_presence_goes_offline_after_three_intervals(agent):
    from datetime import timedelta

    from django.utils import timezone

    agent, _ = agent
    agent.last_seen = timezone.now() - timedelta(seconds=agent.heartbeat_interval * 3 + 1)
    agent.reported_presence = "online"
    assert agent.presence == "offline"
    agent.last_seen = timezone.now()
    assert agent.presence == "online"


def test_seed_demo_agent_writes_credentials_once(settings, tmp_path):
    import json
    import stat

    from apps.agents import demo

    settings.VAR_DIR = tmp_path
    out = StringIO()
    demo.seed(out)
    data = json.loads((tmp_path / "demo_agent.json").read_text())
    assert stat.S_IMODE((tmp_path / "demo_agent.json").stat().st_mode) == 0o600
    assert data["agent_id"] == "agt_demo" and data["api_key"] in out.getvalue()
    assert auth.verify_secret(Agent.objects.get(pk="agt_demo"), data["api_key"])
    again = StringIO()
    demo.seed(again)
    assert data["api_key"] not in again.getvalue()
    assert json.loads((tmp_path / "demo_agent.json").read_text()) == data
