"""Credentials on open sockets and login floods, through a real Daphne (Redis channel layer, PostgreSQL).

A disabled agent's socket, a rotated secret's socket and an expired token's socket are closed by the server
with their close codes (apps/messages/PROTOCOL.md, "Credentials: close codes and login limits"); a login
flood is answered 429 while another agent's requests keep their latency."""

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

import httpx
import pytest
import websockets

from apps.agents import auth, services
from apps.agents.models import Agent
from apps.agents.tests.factories import AgentFactory
from apps.core.testing import BASE_DIR, start_daphne
from apps.messages.testing import recv_until, ws_connect
from conftest import requires_services

pytestmark = [pytest.mark.e2e, requires_services]


@pytest.fixture
def daphne(live_env, tmp_path):
    """One Daphne; the open socket's re-check every second (the backstop of the close events)."""
    process, base_url = start_daphne({**live_env, "AGENT_SOCKET_RECHECK_SECONDS": "1"}, tmp_path)
    yield base_url
    process.stop()


async def _hello(base_url: str, token: str):
    ws = await ws_connect(base_url, token)
    await recv_until(ws, lambda f: f["type"] == "hello")
    return ws


async def _closed(ws, within: float = 10.0) -> tuple[list[dict], int, float]:
    """Frames until the server closes the socket; (frames, close code, seconds it took)."""
    started, frames = time.monotonic(), []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), within)))
    except websockets.ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd else None, time.monotonic() - started


def _while_open(base_url: str, token: str, change) -> tuple[list[dict], int, float]:
    """Connect, make `change` in this process (committed, as admin would), wait for the server to close."""

    async def scenario():
        ws = await _hello(base_url, token)
        await asyncio.to_thread(change)
        return await _closed(ws)

    return asyncio.run(scenario())


def test_disabling_an_agent_closes_its_open_socket_within_5_seconds(daphne):
    agent = AgentFactory()

    def disable():
        agent.is_active = False
        services.save_agent(agent)

    frames, code, seconds = _while_open(daphne, auth.issue_tokens(agent.id)["access_token"], disable)
    assert code == 4403 and seconds < 5
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "agent_disabled"


def test_the_periodic_re_check_closes_a_socket_whose_close_event_was_lost(daphne):
    agent = AgentFactory()

    def disable_without_the_event():  # e.g. the event could not be published: only the version moves
        Agent.objects.filter(pk=agent.pk).update(is_active=False)
        auth.ACTIVE_AGENTS.bump()

    frames, code, seconds = _while_open(daphne, auth.issue_tokens(agent.id)["access_token"], disable_without_the_event)
    assert code == 4403 and seconds < 5  # recheck every 1 s + the version check (AGENT_ACTIVE_CHECK_SECONDS 2 s)


def test_rotating_the_secret_closes_the_socket_and_only_a_new_login_reconnects(daphne):
    agent = AgentFactory()
    old = auth.issue_tokens(agent.id)["access_token"]
    secrets = []
    frames, code, seconds = _while_open(daphne, old, lambda: secrets.append(services.rotate_secret(agent)))
    assert code == 4409 and seconds < 5 and frames[-1]["code"] == "credentials_revoked"

    async def reconnect():
        refused = await _closed(await ws_connect(daphne, old))
        async with httpx.AsyncClient(base_url=daphne) as http:
            tokens = (await http.post("/api/v1/auth/login", json={"agent_id": agent.id, "api_key": secrets[0]})).json()
        ws = await _hello(daphne, tokens["access_token"])  # the new version, right after the rotation
        await ws.close()
        return refused

    refused_frames, refused_code, _ = asyncio.run(reconnect())
    assert refused_code == 4409 and refused_frames[-1]["code"] == "credentials_revoked"


def test_an_access_token_expiring_on_an_open_socket_closes_it(live_env, tmp_path):
    process, base_url = start_daphne({**live_env, "AGENT_ACCESS_TOKEN_TTL": "3"}, tmp_path)
    agent = AgentFactory()
    try:

        async def scenario():
            async with httpx.AsyncClient(base_url=base_url) as http:
                tokens = (
                    await http.post("/api/v1/auth/login", json={"agent_id": agent.id, "api_key": agent.secret})
                ).json()
            assert tokens["expires_in"] == 3
            ws = await _hello(base_url, tokens["access_token"])
            await ws.send(json.dumps({"type": "ping", "ts": 1}))
            pong = await recv_until(ws, lambda f: f["type"] == "pong")  # works until the expiry
            frames, code, seconds = await _closed(ws)
            async with httpx.AsyncClient(base_url=base_url) as http:  # the refresh token still renews
                renewed = await http.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
            return pong, frames, code, seconds, renewed

        pong, frames, code, seconds, renewed = asyncio.run(scenario())
    finally:
        process.stop()
    assert pong["ts"] == 1
    assert code == 4419 and seconds < 4.5 and frames[-1]["code"] == "token_expired"
    assert renewed.status_code == 200


# --- login flood ----------------------------------------------------------------------------------------
def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def _figures(latencies: list[float]) -> str:
    return (
        f"p95 {_p95(latencies) * 1000:.0f} ms, median {statistics.median(latencies) * 1000:.0f} ms, n={len(latencies)}"
    )


async def _outbox_latencies(http: httpx.AsyncClient, token: str, count: int) -> list[float]:
    """Another agent's REST calls, one after another (GET its outbox): seconds each."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        response = await http.get("/api/v1/replies", headers={"Authorization": f"Bearer {token}"})
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200
        await asyncio.sleep(0.02)
    return latencies


def _flood(base_url: str, spoofed: bool) -> subprocess.Popen:
    """bench/login_flood.py in its own process: 300 wrong-key logins, 40 in flight."""
    argv = [sys.executable, str(BASE_DIR / "bench" / "login_flood.py"), base_url, "--total", "300"]
    return subprocess.Popen([*argv, *(["--spoofed"] if spoofed else [])], stdout=subprocess.PIPE, text=True)


def test_a_login_flood_gets_429_while_another_agents_requests_keep_their_latency(live_env, tmp_path):
    process, base_url = start_daphne({**live_env, "CLIENT_IP_PROXY_COUNT": "1"}, tmp_path)
    other = AgentFactory()
    token = auth.issue_tokens(other.id)["access_token"]

    async def scenario():
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            await _outbox_latencies(http, token, 10)  # warm up
            quiet = await _outbox_latencies(http, token, 60)
            results = {}
            for spoofed in (False, True):
                flood = _flood(base_url, spoofed)
                await asyncio.sleep(0.5)  # the flood process is up and sending
                during = []
                while flood.poll() is None or not during:  # for as long as the flood lasts
                    during += await _outbox_latencies(http, token, 5)
                results[spoofed] = (during, json.loads(flood.communicate(timeout=60)[0]))
            return quiet, results

    try:
        quiet, results = asyncio.run(scenario())
    finally:
        process.stop()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg()[:2])
    print(f"\nother agent's GET /api/v1/replies, quiet: {_figures(quiet)}; load average {load}")
    for spoofed, (during, flood) in results.items():
        statuses = flood["statuses"]
        kind = "distributed" if spoofed else "one id, one address"
        print(
            f"  {kind} flood of 300 wrong-key logins in {flood['seconds']} s: {statuses};"
            f" other agent: {_figures(during)}"
        )
        assert set(statuses) <= {"401", "429"} and statuses["429"] >= 250
        assert int(flood["sample_429"]["retry_after"]) > 0
        assert flood["sample_429"]["body"]["code"] in ("throttled", "login_busy")
        assert _p95(during) < max(4 * _p95(quiet), _p95(quiet) + 0.15)
