"""The shared plumbing every app relies on: the versioned cache's propagation, Redis commands of one event-loop
turn in one pipeline, enqueueing after commit."""

import asyncio

import pytest
from django.db import transaction

from apps.core import aio, jobs, redis
from apps.core.cache import VersionedCache

pytestmark = pytest.mark.django_db(transaction=True)


def loader():
    loads = []

    def load(version: str) -> dict:
        loads.append(version)
        return {"generation": len(loads)}

    return load, loads


def test_a_bump_reloads_here_at_once_and_in_other_processes_after_commit():
    load, loads = loader()
    here = VersionedCache("test.propagation", load, check_seconds=lambda: 3600)
    elsewhere = VersionedCache("test.propagation", loader()[0], check_seconds=lambda: 0)
    assert aio.run(here.get()) == {"generation": 1}
    assert aio.run(here.get()) == {"generation": 1} and len(loads) == 1  # in memory, no reload
    first_elsewhere = aio.run(elsewhere.get())
    with transaction.atomic():
        here.bump()
        assert aio.run(elsewhere.get()) is first_elsewhere  # not committed yet: others keep theirs
    assert aio.run(here.get()) == {"generation": 2}  # the writing process reloads at once
    assert aio.run(elsewhere.get()) == {"generation": 2}  # another process, at its next check


def test_concurrent_readers_share_one_load():
    load, loads = loader()
    cache = VersionedCache("test.stampede", load, check_seconds=lambda: 3600)

    async def many():
        return await asyncio.gather(*(cache.get() for _ in range(50)))

    assert len({id(value) for value in aio.run(many())}) == 1 and len(loads) == 1


def test_a_failing_load_is_retried_by_the_next_reader():
    attempts = []

    def flaky(version: str) -> str:
        attempts.append(version)
        if len(attempts) == 1:
            raise RuntimeError("database away")
        return "loaded"

    cache = VersionedCache("test.flaky", flaky, check_seconds=lambda: 3600)
    with pytest.raises(RuntimeError):
        aio.run(cache.get())
    assert aio.run(cache.get()) == "loaded"


def test_a_big_value_keeps_answering_while_it_reloads():
    load, loads = loader()
    cache = VersionedCache("test.stale", load, check_seconds=lambda: 0, serve_stale=lambda value: True)
    aio.run(cache.get())
    cache.bump()
    assert aio.run(cache.get()) == {"generation": 1}  # the reload runs behind
    aio.run(asyncio.sleep(0.2))
    assert aio.run(cache.get()) == {"generation": 2}


def test_a_hung_redis_is_given_up_on_and_the_value_in_memory_served(monkeypatch, settings):
    """E.g. token verification (auth.ACTIVE_AGENTS) during a Redis outage: the last known value, in about
    REDIS_OPTIONAL_TIMEOUT, not an error and not a request that hangs."""
    import time

    settings.REDIS_OPTIONAL_TIMEOUT = 0.2
    load, loads = loader()
    cache = VersionedCache("test.hung", load, check_seconds=lambda: 0)
    assert aio.run(cache.get()) == {"generation": 1}

    async def hangs(*args):
        await asyncio.sleep(3600)

    monkeypatch.setattr(redis, "batched", hangs)
    started = time.monotonic()
    assert aio.run(cache.get(fresh=True)) == {"generation": 1} and len(loads) == 1
    assert time.monotonic() - started < 1.0


def test_the_commands_of_one_loop_turn_share_one_pipeline(monkeypatch):
    pipelines = []
    original = redis._execute

    async def counted(batch):
        pipelines.append(len(batch))
        await original(batch)

    monkeypatch.setattr(redis, "_execute", counted)

    async def burst():
        return await asyncio.gather(*(redis.batched("INCR", redis.key("test", "burst")) for _ in range(100)))

    assert sorted(aio.run(burst())) == list(range(1, 101))
    assert pipelines == [100]


def test_a_failing_command_fails_only_its_caller():
    async def mixed():
        key = redis.key("test", "mixed")
        return await asyncio.gather(
            redis.batched("SET", key, "text"),
            redis.batched("INCR", key),
            redis.batched("GET", key),
            return_exceptions=True,
        )

    ok, failed, value = aio.run(mixed())
    assert ok is True and isinstance(failed, Exception) and value == "text"


def test_a_task_is_sent_after_commit_and_not_at_all_on_rollback(monkeypatch):
    sent = []
    from celery_app import app

    monkeypatch.setattr(app, "send_task", lambda name, args, kwargs, countdown=None: sent.append((name, args)))
    with transaction.atomic():
        jobs.enqueue("monitoring.notify", "标题", "内容")
        assert sent == []
    assert sent == [("monitoring.notify", ("标题", "内容"))]
    with pytest.raises(RuntimeError), transaction.atomic():
        jobs.enqueue("monitoring.notify", "回滚", "")
        raise RuntimeError("rolled back")
    assert len(sent) == 1
    jobs.enqueue("monitoring.notify", "立即", "")  # outside a transaction: at once
    assert sent[-1] == ("monitoring.notify", ("立即", ""))
