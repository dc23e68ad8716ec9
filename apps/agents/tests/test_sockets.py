"""The agent's current-socket lease in the real Redis (apps/agents/sockets.py)."""

import pytest

from apps.agents import sockets
from apps.core import aio
from apps.core import redis as core_redis


def _run(coro):
    return aio.run(coro, timeout=10)


@pytest.fixture
def agent_id(settings):
    settings.AGENT_SOCKET_LEASE_SECONDS = 30
    return "agt_lease_test"


@pytest.fixture(autouse=True)
def _clean(agent_id):
    async def drop():
        await core_redis.aclient().delete(*sockets._keys(agent_id))

    _run(drop())
    yield
    _run(drop())


def test_another_installation_is_refused_the_same_one_takes_over_with_a_newer_generation(agent_id):
    first = _run(sockets.claim(agent_id, "installation-a", "chan-1"))
    assert first is not None
    assert _run(sockets.claim(agent_id, "installation-b", "chan-2")) is None  # refused while the first holds it
    takeover = _run(sockets.claim(agent_id, "installation-a", "chan-3"))
    assert takeover.generation > first.generation
    assert _run(sockets.renew(first)) is False  # the replaced socket learns it lost the lease
    assert _run(sockets.renew(takeover)) is True
    _run(sockets.release(first))  # a stale release leaves the current lease alone
    assert _run(sockets.claim(agent_id, "installation-b", "chan-4")) is None
    _run(sockets.release(takeover))
    assert _run(sockets.claim(agent_id, "installation-b", "chan-5")) is not None


def test_a_lease_that_expired_during_an_outage_is_taken_back_if_nobody_else_holds_it(agent_id):
    lease = _run(sockets.claim(agent_id, "installation-a", "chan-1"))

    async def expire():  # the lease ran out while Redis was away
        await core_redis.aclient().delete(sockets._keys(agent_id)[0])

    _run(expire())
    assert _run(sockets.renew(lease)) is True
    assert _run(sockets.claim(agent_id, "installation-b", "chan-2")) is None


def test_the_handshake_names_the_installation_else_it_is_the_unnamed_one():
    assert sockets.installation({b"x-agent-instance": b"0123456789abcdef"}) == "0123456789abcdef"
    assert sockets.installation({b"x-agent-instance": b"unnamed|x"}) == sockets.UNNAMED
    assert sockets.installation({b"x-agent-instance": b"short"}) == sockets.UNNAMED
    assert sockets.installation({}) == sockets.UNNAMED
