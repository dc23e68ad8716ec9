"""The thread-free ingest path of web processes (PostgreSQL + Redis only)."""

import pytest

from apps.messages import aingest, ingest
from apps.messages.models import Message
from apps.messages.tests.helpers import make_agent
from conftest import requires_services

pytestmark = [requires_services, pytest.mark.django_db(transaction=True)]


def item(client_id: str, chat: str = "赵六"):
    clean = ingest.validate({"id": client_id, "chat_name": chat, "sender": chat, "content": "你好"})
    assert not clean.errors
    return clean


async def test_single_batch_duplicates_and_throttle(settings):
    from asgiref.sync import sync_to_async

    settings.INGEST_RATE_LIMIT = 5
    agent, _, _ = await sync_to_async(make_agent)()
    try:
        first = (await aingest.ingest(agent.id, [item("a-1")]))[0]
        assert first.created
        batch = await aingest.ingest(agent.id, [item("a-1"), item("a-2"), item("a-3", chat="另一个")])
        assert [a.created for a in batch] == [False, True, True]
        assert batch[0].message_id == first.message_id
        await aingest.ingest(agent.id, [item("a-4"), item("a-5")])  # crosses the limit: still accepted
        with pytest.raises(ingest.Throttled) as refused:
            await aingest.ingest(agent.id, [item("a-6")])
        assert refused.value.status == 429 and refused.value.retry_after >= 1
    finally:
        await aingest.close()
        aingest._blocked.clear()
    count = await sync_to_async(Message.objects.filter(agent_id=agent.id).count)()
    assert count == 5


async def test_requests_of_one_loop_turn_share_one_enqueue(settings):
    """Ten requests reaching the enqueue step in the same loop turn: one pipeline, one LPUSH of one
    process_messages task carrying all ten messages (the worker's consumer receives one task), and each
    request gets its own throttle count back."""
    import asyncio
    import base64
    import json

    settings.PIPELINE_ENQUEUE_BATCH = 25
    try:
        _pool, _cache, broker, batcher = await aingest._resources()
        await broker.delete("messages", "wxcs:ingest-rate:test-batcher")
        counts = await asyncio.gather(
            *(batcher.submit("wxcs:ingest-rate:test-batcher", 1, [(1000 + i, 2000 + i)]) for i in range(10))
        )
        wire = await broker.lrange("messages", 0, -1)
        assert sorted(counts) == list(range(1, 11))
        assert len(wire) == 1
        envelope = json.loads(wire[0])
        args = json.loads(base64.b64decode(envelope["body"]))[0]
        assert envelope["headers"]["task"] == "apps.messages.tasks.process_messages"
        assert args == [[[1000 + i, 2000 + i] for i in range(10)]]
        assert await batcher.submit(None, 0, []) is None  # nothing to count or enqueue: no round trip
    finally:
        await broker.delete("messages", "wxcs:ingest-rate:test-batcher")
        await aingest.close()
