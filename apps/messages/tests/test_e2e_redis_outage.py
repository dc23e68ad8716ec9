"""Redis away during ingest, with real processes: Daphne and a Celery worker on a redis-server of this test's
own, stopped (killed, or frozen with SIGSTOP so that every call hangs) while an agent keeps sending over REST and
its WebSocket. No request fails or hangs: each is stored and answered 202 within a couple of seconds; once
Redis is back, every accepted message is decided and replied to, without a beat sweep."""

import asyncio
import json
import signal
import time

import httpx
import pytest

from apps.core.testing import RedisServer, running, start_daphne, start_worker
from apps.messages.models import Message, Reply
from apps.messages.testing import recv_until, ws_connect
from apps.messages.tests.helpers import make_agent
from conftest import requires_services

pytestmark = [pytest.mark.e2e, requires_services]

BOUND = 3.0  # seconds: no request may take longer while Redis is away


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def item(client_id: str, chat: str) -> dict:
    return {"id": client_id, "chat_name": chat, "chat_type": "private", "sender": chat, "content": f"问题 {client_id}"}


async def rest_sender(http: httpx.AsyncClient, token: str, prefix: str, until: float, results: list) -> None:
    n = 0
    while time.monotonic() < until:
        n += 1
        started = time.monotonic()
        try:
            response = await http.post(
                "/api/v1/messages",
                headers={"Authorization": f"Bearer {token}"},
                json={"message": item(f"{prefix}-{n}", f"客户{prefix}")},
                timeout=15,
            )
            results.append((response.status_code, time.monotonic() - started, response.json()))
        except httpx.TimeoutException:
            results.append(("timeout", time.monotonic() - started, None))


async def during_outage(base_url: str, token: str, ws, seconds: float) -> tuple[list, float, dict]:
    """REST from 8 concurrent clients for `seconds`, and one WebSocket batch in the middle."""
    results: list = []
    until = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base_url) as http:
        senders = [rest_sender(http, token, f"r{i}", until, results) for i in range(8)]

        async def batch():
            await asyncio.sleep(seconds / 2)
            started = time.monotonic()
            batch = [item(f"w-{i}", f"群发{i % 3}") for i in range(5)]
            await ws.send(json.dumps({"type": "messages", "messages": batch}))
            frame = await recv_until(ws, lambda f: f["type"] in ("accepted_batch", "error"), within=15)
            return time.monotonic() - started, frame

        *_, (batch_seconds, batch_frame) = await asyncio.gather(*senders, batch())
    return results, batch_seconds, batch_frame


@pytest.mark.parametrize("outage", ["killed", "frozen"])
def test_redis_away_during_ingest_no_5xx_no_hang_every_message_answered_after(live_env, tmp_path, own_redis, outage):
    env = dict(live_env, REDIS_URL=own_redis.url, CELERY_BROKER_URL=own_redis.url)
    worker = start_worker(env, tmp_path)
    daphne, base_url = start_daphne(env, tmp_path)
    _, token = make_agent()

    async def scenario():
        ws = await ws_connect(base_url, token)
        await recv_until(ws, lambda f: f["type"] == "hello")
        await ws.send(json.dumps({"type": "message", "message": item("before", "预热")}))
        warm = await recv_until(ws, lambda f: f["type"] == "accepted")
        await recv_until(ws, lambda f: f["type"] == "reply")  # the path works end to end before the outage
        if outage == "killed":
            own_redis.stop()
        else:
            own_redis.process.send_signal(signal.SIGSTOP)
        try:
            results, batch_seconds, batch_frame = await during_outage(base_url, token, ws, seconds=8)
        finally:
            if outage == "killed":
                own_redis.start()
            else:
                own_redis.process.send_signal(signal.SIGCONT)
        back = time.monotonic()
        await ws.close()
        return warm, results, batch_seconds, batch_frame, back

    with running(daphne, worker):
        warm, results, batch_seconds, batch_frame, back = asyncio.run(scenario())
        statuses = {status for status, _, _ in results}
        slowest = max(seconds for _, seconds, _ in results)
        print(f"{outage}: {len(results)} REST, statuses {statuses}, slowest {slowest:.2f}s, batch {batch_seconds:.2f}s")
        assert statuses == {202}, [r for r in results if r[0] != 202][:5]
        assert slowest < BOUND and batch_seconds < BOUND
        assert batch_frame["type"] == "accepted_batch" and len(batch_frame["accepted"]) == 5
        accepted = {body["message_id"] for _, _, body in results} | {a["message_id"] for a in batch_frame["accepted"]}
        assert len(accepted) == len(results) + 5  # each request stored one new message

        deadline = time.monotonic() + 30
        while Reply.objects.filter(message_id__in=accepted).count() < len(accepted):
            assert time.monotonic() < deadline, (
                f"{Reply.objects.filter(message_id__in=accepted).count()} of {len(accepted)} replied\n"
                f"{worker.log_tail()}\n{daphne.log_tail()}"
            )
            time.sleep(0.2)
        print(f"{outage}: all {len(accepted)} answered {time.monotonic() - back:.1f}s after Redis returned")
    assert Reply.objects.filter(message_id__in=accepted).count() == len(accepted)  # one reply each
    assert set(Message.objects.filter(pk__in=accepted).values_list("status", flat=True)) == {"decided"}
    assert Message.objects.get(pk=warm["message_id"]).status == "decided"
