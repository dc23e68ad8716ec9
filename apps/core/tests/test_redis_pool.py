"""The sync Redis client's pool is as large as the threads that may use it at once, and a caller beyond that waits
for a connection instead of failing (redis-py's default pool of 100 failed a burst of 256 Celery threads)."""

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from apps.core import redis
from apps.core.testing import BASE_DIR


def burst(client, users: int) -> list:
    """`users` threads at once, each holding a connection for 0.3 s (an empty BLPOP)."""
    key = redis.key("test", "pool-burst")
    start = threading.Barrier(users)

    def use(_):
        start.wait(timeout=30)
        return client.blpop([key], timeout=0.3)

    with ThreadPoolExecutor(users) as pool:
        return list(pool.map(use, range(users)))


def test_a_burst_beyond_the_worker_threads_waits_for_connections_instead_of_failing():
    client = redis.client()
    assert client.connection_pool.max_connections == settings.REDIS_MAX_CONNECTIONS
    assert settings.REDIS_MAX_CONNECTIONS >= settings.CELERY_WORKER_CONCURRENCY + settings.DB_THREADS
    users = settings.REDIS_MAX_CONNECTIONS + 40  # more than the pool holds: some callers wait their turn
    assert burst(client, users) == [None] * users


def test_the_same_burst_on_redis_pys_default_pool_fails():
    """What the sized pool prevents (and proof that the burst above really exceeds 100 connections)."""
    default = Redis.from_url(redis.redis_py_url(redis.cache_url()), socket_timeout=settings.REDIS_SOCKET_TIMEOUT)
    try:
        with pytest.raises(RedisConnectionError, match="Too many connections"):
            burst(default, settings.CELERY_WORKER_CONCURRENCY)
    finally:
        default.close()


def test_the_pool_follows_the_workers_thread_count():
    probe = (
        "import json, django; django.setup(); from django.conf import settings; "
        "from apps.core import redis; print(json.dumps(redis.client().connection_pool.max_connections))"
    )
    env = {**os.environ, "WXCS_TESTING": "1", "DJANGO_SETTINGS_MODULE": "wxcs.settings"}
    env.update(CELERY_WORKER_CONCURRENCY="500", DB_THREADS="4")
    env.pop("REDIS_MAX_CONNECTIONS", None)
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == 500 + 4 + 16
