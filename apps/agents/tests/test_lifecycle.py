"""Credential lifecycle: refresh tokens rotate and a spent one revokes its family; rotating a secret (command or
admin action) voids every token; logins are throttled (429 + Retry-After) and cost the same for unknown ids."""

import asyncio
import json
import statistics
import time
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from apps.agents import auth
from apps.agents.models import Agent, RefreshTokenFamily
from apps.agents.tests.factories import AgentFactory

pytestmark = pytest.mark.django_db(transaction=True)  # token checks read the enabled agents on another thread


def login(agent_id: str, api_key: str, address: str = "10.0.0.1"):
    return APIClient(REMOTE_ADDR=address).post(
        "/api/v1/auth/login", {"agent_id": agent_id, "api_key": api_key}, format="json"
    )


def refresh(token: str, address: str = "10.0.0.1"):
    return APIClient(REMOTE_ADDR=address).post("/api/v1/auth/refresh", {"refresh_token": token}, format="json")


def heartbeat(token: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.post("/api/v1/heartbeat", {}, format="json")


def test_each_refresh_spends_its_token_and_reusing_a_spent_one_revokes_the_family():
    agent = AgentFactory()
    first = login(agent.id, agent.secret).json()
    second = refresh(first["refresh_token"])
    assert second.status_code == 200
    third = refresh(second.json()["refresh_token"])
    assert third.status_code == 200 and third.json()["refresh_token"] != second.json()["refresh_token"]
    reused = refresh(first["refresh_token"])  # a copy of a spent token: stolen, or replayed
    assert reused.status_code == 401 and reused.json() == {
        "detail": "refresh token already used; its token family is revoked",
        "code": "token_reused",
    }
    newest = refresh(third.json()["refresh_token"])  # the family is gone: its newest token too
    assert newest.status_code == 401 and newest.json()["code"] == "token_revoked"
    family = RefreshTokenFamily.objects.get(agent=agent)
    assert family.revoked_reason == "reuse" and family.revoked_at is not None
    other = login(agent.id, agent.secret).json()  # a login starts a new family, unaffected
    assert refresh(other["refresh_token"]).status_code == 200


def test_a_refresh_token_outside_a_stored_family_is_refused():
    agent = AgentFactory()
    unbound = auth.issue_tokens(agent.id)["refresh_token"]  # validly signed, but no family row issued it
    response = refresh(unbound)
    assert response.status_code == 401 and response.json()["code"] == "token_revoked"


def _rotated_by_command(agent: Agent) -> str:
    out = StringIO()
    call_command("rotate_agent_secret", agent.id, stdout=out)
    text = out.getvalue()
    assert "shown only once" in text
    return text.split("api_key:")[1].split()[0]


def _rotated_by_admin_action(agent: Agent) -> str:
    admin = APIClient()
    admin.force_login(get_user_model().objects.create_superuser("boss", password="x-Pa55-word"))
    response = admin.post(
        "/admin/agents/agent/", {"action": "rotate_secrets", "_selected_action": [agent.pk], "index": 0}
    )
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    html = response.content.decode()
    assert agent.id in html and "只显示这一次" in html
    return html.split('<code class="agent-secret">')[1].split("</code>")[0]


@pytest.mark.parametrize("rotate", [_rotated_by_command, _rotated_by_admin_action], ids=["command", "admin"])
def test_rotating_a_secret_voids_the_old_secret_and_every_token(rotate):
    agent = AgentFactory()
    tokens = login(agent.id, agent.secret).json()
    assert heartbeat(tokens["access_token"]).status_code == 200  # its claims are now in the verified-token cache
    new_secret = rotate(agent)
    assert new_secret and new_secret != agent.secret
    stale = heartbeat(tokens["access_token"])
    assert stale.status_code == 401 and "secret was rotated" in stale.json()["detail"]
    assert refresh(tokens["refresh_token"]).json()["code"] in ("credentials_revoked", "token_revoked")
    assert login(agent.id, agent.secret).status_code == 401
    fresh = login(agent.id, new_secret)
    assert fresh.status_code == 200
    assert heartbeat(fresh.json()["access_token"]).status_code == 200
    assert auth.decode(fresh.json()["access_token"])["sv"] == Agent.objects.get(pk=agent.pk).secret_version == 2
    assert refresh(fresh.json()["refresh_token"]).status_code == 200


def test_rotate_agent_secret_command_json_and_unknown_id():
    agent = AgentFactory()
    out = StringIO()
    call_command("rotate_agent_secret", agent.id, "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["agent_id"] == agent.id and login(agent.id, data["api_key"]).status_code == 200
    with pytest.raises(CommandError):
        call_command("rotate_agent_secret", "agt_nobody", stdout=StringIO())


async def test_a_token_newer_than_this_processes_view_is_checked_against_redis_not_refused():
    """After a rotation another process learns the new version only at its next check: a fresh login's token
    (newer version) makes it ask Redis at once instead of refusing the token for up to a check interval."""
    from apps.core.db import run_db

    agent = await run_db(AgentFactory)
    await auth.ACTIVE_AGENTS.get()  # this process's view: version 1
    await run_db(Agent.objects.filter(pk=agent.pk).update, secret_version=2)
    auth.ACTIVE_AGENTS._publish()  # what another process's bump does: only the Redis version moves
    identity = await auth.authenticate_token(auth.issue_tokens(agent.id, 2)["access_token"])
    assert identity.secret_version == 2
    with pytest.raises(auth.AuthError) as old:
        await auth.authenticate_token(auth.issue_tokens(agent.id, 1)["access_token"])
    assert old.value.code == "credentials_revoked"


def test_logins_are_throttled_per_agent_id_with_retry_after(settings):
    settings.AGENT_LOGIN_LIMIT_PER_ID, settings.AGENT_LOGIN_LIMIT_PER_ADDRESS = 3, 100
    agent, other = AgentFactory(), AgentFactory()
    assert [login(agent.id, "wrong", f"10.0.1.{i}").status_code for i in range(3)] == [401, 401, 401]
    started = time.perf_counter()
    throttled = login(agent.id, agent.secret, "10.0.1.9")  # even the right key: the id is locked for the window
    took = time.perf_counter() - started
    assert throttled.status_code == 429
    assert throttled.json() == {"detail": "too many login attempts", "code": "throttled"}
    assert 0 < int(throttled["Retry-After"]) <= settings.AGENT_LOGIN_WINDOW
    assert took < 0.2  # refused before any hashing
    assert login(other.id, other.secret, "10.0.1.9").status_code == 200  # other agents are not affected


def test_logins_are_throttled_per_client_address(settings):
    settings.AGENT_LOGIN_LIMIT_PER_ID, settings.AGENT_LOGIN_LIMIT_PER_ADDRESS = 100, 3
    agent = AgentFactory()
    assert [login(f"agt_guess{i}", "x", "10.0.2.1").status_code for i in range(3)] == [401, 401, 401]
    assert login(agent.id, agent.secret, "10.0.2.1").status_code == 429
    assert login(agent.id, agent.secret, "10.0.2.2").status_code == 200


def test_successful_logins_do_not_use_up_the_limit(settings):
    settings.AGENT_LOGIN_LIMIT_PER_ID, settings.AGENT_LOGIN_LIMIT_PER_ADDRESS = 2, 2
    agent = AgentFactory()
    assert all(login(agent.id, agent.secret).status_code == 200 for _ in range(5))


def test_refresh_is_throttled_per_client_address(settings):
    settings.AGENT_REFRESH_LIMIT_PER_ADDRESS = 2
    assert [refresh("garbage", "10.0.3.1").status_code for _ in range(3)] == [401, 401, 429]
    assert refresh("garbage", "10.0.3.2").status_code == 401


def test_behind_a_trusted_proxy_the_forwarded_address_is_throttled(settings):
    settings.CLIENT_IP_PROXY_COUNT, settings.AGENT_LOGIN_LIMIT_PER_ADDRESS = 1, 1
    settings.AGENT_LOGIN_LIMIT_PER_ID = 100

    def via_proxy(forwarded: str):
        client = APIClient(REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR=forwarded)
        return client.post("/api/v1/auth/login", {"agent_id": "agt_x", "api_key": "x"}, format="json").status_code

    assert via_proxy("6.6.6.6, 1.1.1.1") == 401
    assert via_proxy("7.7.7.7, 1.1.1.1") == 429  # what the client wrote (left) does not buy a new address
    assert via_proxy("1.1.1.2") == 401


def test_a_failed_login_takes_as_long_for_an_unknown_id_as_for_a_wrong_key(settings):
    settings.AGENT_LOGIN_LIMIT_PER_ID = settings.AGENT_LOGIN_LIMIT_PER_ADDRESS = 0
    agent = AgentFactory()
    disabled = AgentFactory(is_active=False)

    def seconds(agent_id: str, i: int) -> float:
        started = time.perf_counter()
        assert login(agent_id, f"wrong-key-{i}").status_code == 401
        return time.perf_counter() - started

    login("agt_warmup", "x")  # the dummy hash is made once per process
    ids = {"existing": agent.id, "unknown": "agt_nobody", "disabled": disabled.id}
    times: dict[str, list[float]] = {name: [] for name in ids}
    for i in range(7):  # interleaved, so that a change in the machine's load hits all three alike
        for name, agent_id in ids.items():
            times[name].append(seconds(agent_id, i))
    existing, unknown, off = (statistics.median(times[name]) for name in ids)
    print(f"failed login median: existing id {existing * 1000:.0f} ms, unknown {unknown * 1000:.0f} ms, "
          f"disabled {off * 1000:.0f} ms")  # fmt: skip
    assert existing > 0.05  # a real hash ran (PBKDF2)
    for other in (unknown, off):
        assert abs(existing - other) < 0.4 * existing, (existing, other)  # without the dummy hash: ~90 %


def test_a_login_beyond_the_waiting_room_is_refused_at_once(settings):
    settings.AGENT_LOGIN_LIMIT_PER_ID = settings.AGENT_LOGIN_LIMIT_PER_ADDRESS = 0
    settings.AGENT_LOGIN_MAX_WAITING = 0  # nobody may wait while every hashing slot is taken
    agent = AgentFactory()
    with auth._HASHING.slot():  # another login is hashing (the default: one slot per process)
        started = time.perf_counter()
        busy = login(agent.id, "wrong-key")
        took = time.perf_counter() - started
    assert busy.status_code == 429 and busy.json()["code"] == "login_busy"
    assert busy["Retry-After"] == str(settings.AGENT_LOGIN_BUSY_RETRY_AFTER) and took < 0.2
    assert login(agent.id, agent.secret).status_code == 200  # a free slot lets a login through


HOST = [(b"host", b"testserver")]  # Daphne's scope always has one; the gate leaves a bad Host to Django


async def test_the_asgi_gate_refuses_an_address_over_its_limit_before_django(settings):
    from apps.agents.asgi import with_login_gate
    from apps.core import ratelimit

    settings.AGENT_LOGIN_LIMIT_PER_ADDRESS = 1
    reached_django, sent = [], []

    async def django(scope, receive, send):
        reached_django.append(scope["path"])

    async def send(event):
        sent.append(event)

    gate = with_login_gate(django)
    scope = {"type": "http", "method": "POST", "path": "/api/v1/auth/login", "headers": HOST, "client": ("10.4.0.1", 1)}
    await gate(scope, None, send)
    assert reached_django == ["/api/v1/auth/login"] and not sent  # under the limit: Django decides (and counts)
    await asyncio.to_thread(ratelimit.hit, auth.login_limits("agt_x", "10.4.0.1"))  # the attempt Django counted
    await gate(scope, None, send)
    assert reached_django == ["/api/v1/auth/login"]
    assert sent[0]["status"] == 429 and 0 < int(dict(sent[0]["headers"])[b"retry-after"]) <= 300
    assert json.loads(sent[1]["body"]) == {"detail": "too many login attempts", "code": "throttled"}
    await gate({**scope, "client": ("10.4.0.2", 1)}, None, send)  # another address
    assert len(reached_django) == 2


async def test_the_asgi_gate_lets_no_more_logins_into_django_than_it_hashes_and_lets_wait(settings):
    from apps.agents.asgi import with_login_gate

    settings.AGENT_LOGIN_LIMIT_PER_ADDRESS = 100  # the address check awaits Redis: the burst must not slip past
    settings.AGENT_LOGIN_HASH_CONCURRENCY, settings.AGENT_LOGIN_MAX_WAITING = 1, 2
    release, inside, answers = asyncio.Event(), [], []

    async def django(scope, receive, send):  # a login that hashes until released
        inside.append(scope["client"][0])
        await release.wait()

    async def send(event):
        if event["type"] == "http.response.start":
            answers.append(event["status"])

    gate = with_login_gate(django)

    def login_from(i: int):
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/api/v1/auth/login",
            "headers": HOST,
            "client": (f"10.5.0.{i}", 1),
        }
        return gate(scope, None, send)

    logins = [asyncio.ensure_future(login_from(i)) for i in range(10)]  # ten addresses at once
    await asyncio.sleep(0.1)
    assert len(inside) == 3 and answers == [429] * 7  # 1 hashing + 2 waiting; the rest refused at the door
    release.set()
    await asyncio.gather(*logins)
    await login_from(99)
    assert len(inside) == 4  # slots free again
