"""Access and refresh tokens: what they open, and every way a bad one is refused (401, never a 500)."""

import time

import jwt
import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from apps.agents import auth, services
from apps.agents.models import Agent
from apps.agents.tests.factories import AgentFactory

pytestmark = pytest.mark.django_db(transaction=True)  # token checks read the enabled agents on another thread


def heartbeat(token: str | None, payload: dict | None = None):
    client = APIClient()
    if token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.post("/api/v1/heartbeat", payload or {}, format="json")


def refresh(token: str):
    return APIClient().post("/api/v1/auth/refresh", {"refresh_token": token}, format="json")


def test_access_token_opens_the_api_and_refresh_gives_a_new_pair():
    agent = AgentFactory()
    tokens = auth.new_token_family(agent)
    assert heartbeat(tokens["access_token"]).status_code == 200
    renewed = refresh(tokens["refresh_token"])
    assert renewed.status_code == 200
    assert heartbeat(renewed.json()["access_token"]).status_code == 200


def test_token_types_are_not_interchangeable():
    agent = AgentFactory()
    tokens = auth.issue_tokens(agent.id)
    assert refresh(tokens["access_token"]).status_code == 401
    assert heartbeat(tokens["refresh_token"]).status_code == 401


def test_missing_malformed_expired_and_forged_tokens_are_401():
    agent = AgentFactory()
    assert heartbeat(None).status_code == 401
    assert heartbeat("garbage").status_code == 401
    expired = jwt.encode({"sub": agent.id, "typ": "access", "exp": int(time.time()) - 5}, auth.signing_key(), "HS256")
    response = heartbeat(expired)
    assert response.status_code == 401 and response.json()["detail"]
    forged = jwt.encode(
        {"sub": agent.id, "typ": "access", "exp": int(time.time()) + 60},
        "wrong-key-of-thirty-two-bytes-long!!",
        "HS256",
    )
    assert heartbeat(forged).status_code == 401
    assert refresh("garbage").status_code == 401


def test_disabling_an_agent_in_admin_locks_out_its_tokens_at_once():
    agent = AgentFactory()
    tokens = auth.new_token_family(agent)
    assert heartbeat(tokens["access_token"]).status_code == 200
    admin = APIClient()
    admin.force_login(get_user_model().objects.create_superuser("boss", password="x-Pa55-word"))
    form = {"name": agent.name, "heartbeat_interval": 30, "wechat_account": "", "driver": "", "agent_version": ""}
    assert admin.post(f"/admin/agents/agent/{agent.pk}/change/", form).status_code == 302  # is_active unticked
    assert Agent.objects.get(pk=agent.pk).is_active is False
    assert heartbeat(tokens["access_token"]).status_code == 401
    assert refresh(tokens["refresh_token"]).status_code == 401
    assert admin.post(f"/admin/agents/agent/{agent.pk}/change/", {**form, "is_active": "on"}).status_code == 302
    assert heartbeat(tokens["access_token"]).status_code == 200


def test_a_deleted_agents_token_is_refused():
    agent = AgentFactory()
    token = auth.issue_tokens(agent.id)["access_token"]
    services.delete_agents(Agent.objects.filter(pk=agent.pk))
    response = heartbeat(token)
    assert response.status_code == 401 and response.json()["detail"] == "agent unknown or disabled"


async def test_the_async_check_the_websocket_and_ingest_await():
    from apps.core.db import run_db

    agent = await run_db(AgentFactory)
    identity = await auth.authenticate_token(auth.issue_tokens(agent.id)["access_token"])
    assert identity.agent_id == agent.id and identity.is_authenticated
    with pytest.raises(auth.AuthError) as refused:
        await auth.authenticate_token(auth.issue_tokens("agt_nobody")["access_token"])
    assert refused.value.code == "agent_disabled"
    with pytest.raises(auth.AuthError) as malformed:
        await auth.authenticate_token("")
    assert malformed.value.code == "missing_token"
