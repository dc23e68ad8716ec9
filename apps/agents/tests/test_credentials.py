"""An agent's id + secret: registered once, stored hashed, exchanged for tokens at login."""

import json
import stat
from io import StringIO

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from apps.agents import auth, demo, services
from apps.agents.models import Agent
from apps.agents.tests.factories import AgentFactory

pytestmark = pytest.mark.django_db(transaction=True)  # token checks read the enabled agents on another thread


def login(agent_id: str, api_key: str):
    return APIClient().post("/api/v1/auth/login", {"agent_id": agent_id, "api_key": api_key}, format="json")


def test_create_agent_command_prints_id_and_secret_once_and_stores_only_a_hash():
    out = StringIO()
    call_command("create_agent", "前台一号", stdout=out)
    text = out.getvalue()
    agent = Agent.objects.get(name="前台一号")
    assert agent.id in text
    secret = text.split("api_key:")[1].split()[0]
    assert secret not in agent.secret_hash and agent.secret_hash.startswith("pbkdf2_")
    assert auth.verify_secret(agent, secret)
    assert not auth.verify_secret(agent, secret + "x") and not auth.verify_secret(agent, "")


def test_create_agent_command_as_json():
    out = StringIO()
    call_command("create_agent", "前台二号", "--id", "agt_front2", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["agent_id"] == "agt_front2" and auth.verify_secret(Agent.objects.get(pk="agt_front2"), data["api_key"])


def test_login_gives_an_access_and_a_refresh_token():
    agent = AgentFactory()
    response = login(agent.id, agent.secret)
    assert response.status_code == 200, response.content
    tokens = response.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] > 0
    assert auth.decode(tokens["access_token"])["sub"] == agent.id
    assert auth.decode(tokens["refresh_token"], "refresh")["sub"] == agent.id


def test_wrong_secret_unknown_agent_or_missing_fields_are_refused():
    agent = AgentFactory()
    wrong = login(agent.id, "nope")
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_credentials"
    assert wrong["WWW-Authenticate"] == 'Bearer realm="agent"'
    assert login("agt_missing", agent.secret).status_code == 401
    assert APIClient().post("/api/v1/auth/login", {}, format="json").status_code == 400


def test_a_disabled_agent_cannot_log_in():
    agent = AgentFactory()
    agent.is_active = False
    services.save_agent(agent)
    assert login(agent.id, agent.secret).status_code == 401


def test_demo_agent_credentials_are_written_once_owner_only(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    out = StringIO()
    demo.seed(out)
    path = tmp_path / "demo_agent.json"
    data = json.loads(path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert data["agent_id"] == "agt_demo" and data["api_key"] in out.getvalue()
    assert login(data["agent_id"], data["api_key"]).status_code == 200
    again = StringIO()
    demo.seed(again)
    assert data["api_key"] not in again.getvalue()
    assert json.loads(path.read_text()) == data


def test_a_lost_demo_credentials_file_rekeys_the_agent_and_the_old_secret_stops_working(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    demo.seed(StringIO())
    old = json.loads((tmp_path / "demo_agent.json").read_text())["api_key"]
    (tmp_path / "demo_agent.json").unlink()
    demo.seed(StringIO())
    new = json.loads((tmp_path / "demo_agent.json").read_text())["api_key"]
    assert new != old
    assert login("agt_demo", new).status_code == 200 and login("agt_demo", old).status_code == 401
