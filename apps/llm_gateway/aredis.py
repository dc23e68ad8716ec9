"""Async Redis for the gateway and the cost tracker: one `redis.asyncio` client per event loop, on the
same Redis (and key prefix) as the Django cache. None when the cache is not Redis (tests without
services): callers then use their in-process fallback."""

import asyncio
import weakref

from django.conf import settings

_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, object]" = weakref.WeakKeyDictionary()


def redis_url() -> str | None:
    cache = settings.CACHES["default"]
    return cache["LOCATION"] if "django_redis" in cache["BACKEND"] else None


def client():
    url = redis_url()
    if url is None:
        return None
    loop = asyncio.get_running_loop()
    redis = _clients.get(loop)
    if redis is None:
        from redis.asyncio import Redis

        redis = Redis.from_url(
            url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0, max_connections=200
        )
        _clients[loop] = redis
    return redis


def sync_client():
    """The Django cache's (sync) Redis connection, for admin pages, reports and commands."""
    if redis_url() is None:
        return None
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def key(*parts: object) -> str:
    return f"{settings.CACHE_KEY_PREFIX}:llm:" + ":".join(str(p) for p in parts)


def reset() -> None:
    _clients.clear()
