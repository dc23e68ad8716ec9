"""How the agent reacts to the server's credential close codes and to rotating refresh tokens (against the
stand-in server; apps/messages/tests/test_e2e_credentials.py closes real sockets from a real Daphne)."""

import asyncio
import logging

from agent.client import ServerClient, close_action
from agent.tests.conftest import agent_config, running_agent, wait_for
from agent.tests.fakeserver import FakeServer


async def test_a_refresh_keeps_the_new_refresh_token_and_a_refused_one_falls_back_to_login(server, tmp_path):
    client = ServerClient(agent_config(tmp_path, server.url).server)
    await client.login()
    first = client._refresh
    await client.refresh()
    second = client._refresh
    assert second != first and server.refreshes == 1
    await client.refresh()  # the server spent `second`: only the kept, newest token works
    assert server.refreshes == 2 and server.logins == 1
    server._refresh_tokens.clear()  # e.g. the family was revoked
    await client.refresh()
    assert server.logins == 2 and client._access


async def test_concurrent_callers_share_one_refresh(tmp_path):
    server = await FakeServer(access_ttl=30).start()  # always within a minute of expiry: each call refreshes
    try:
        client = ServerClient(agent_config(tmp_path, server.url).server)
        await client.login()
        tokens = await asyncio.gather(*(client.access_token() for _ in range(5)))
    finally:
        await server.stop()
    # serialised: every refresh used the refresh token the previous one returned (none was refused)
    assert server.refreshes == 5 and server.logins == 1 and tokens[-1] == client._access


async def test_token_expired_close_refreshes_and_reconnects_without_a_login(server, tmp_path):
    async with running_agent(agent_config(tmp_path, server.url)):
        await wait_for(lambda: server.ws_connections == 1 and server._sockets)
        await server.close_sockets(4419, "token_expired")
        await wait_for(lambda: server.ws_connections == 2 and server._sockets)
    assert server.refreshes == 1 and server.logins == 1


async def test_credentials_revoked_close_logs_in_again(server, tmp_path):
    async with running_agent(agent_config(tmp_path, server.url)):
        await wait_for(lambda: server.ws_connections == 1 and server._sockets)
        server._tokens.clear()  # a rotated secret voids every token
        server._refresh_tokens.clear()
        await server.close_sockets(4409, "credentials_revoked")
        await wait_for(lambda: server.ws_connections == 2 and server._sockets)
    assert server.logins == 2 and server.refreshes == 0


async def test_agent_disabled_close_waits_the_longest_delay_between_tries(server, tmp_path, caplog):
    config = agent_config(tmp_path, server.url, reconnect={"initial_s": 0.05, "max_s": 2.0})
    with caplog.at_level(logging.ERROR):
        async with running_agent(config):
            await wait_for(lambda: server.ws_connections == 1 and server._sockets)
            await server.close_sockets(4403, "agent_disabled")
            await asyncio.sleep(0.8)  # fast backoff would have reconnected several times by now
            assert server.ws_connections == 1
            assert "disabled this agent" in caplog.text
            await wait_for(lambda: server.ws_connections == 2, timeout=5)  # and it does try again later


def test_close_codes_map_to_actions():
    class Closed(Exception):
        def __init__(self, code):
            self.rcvd = type("Close", (), {"code": code})()

    assert [close_action(Closed(code)) for code in (4401, 4403, 4409, 4419, 1011)] == [
        "login",
        "stop",
        "login",
        "refresh",
        None,
    ]
    assert close_action(RuntimeError("network")) is None
