"""Readiness: each dependency answers within a short timeout, or is named as failed."""

import asyncio
import logging
import time
import uuid

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.db import connection

logger = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_cache() -> None:
    key = f"readyz:{uuid.uuid4().hex}"
    cache.set(key, "1", timeout=5)
    if cache.get(key) != "1":
        raise RuntimeError("cache did not return the value it was given")
    cache.delete(key)


def _check_broker() -> None:
    from celery_app import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=CHECK_TIMEOUT)


async def _check_channel_layer() -> None:
    layer = get_channel_layer()
    # The default prefix matters: channels-redis serves every process-local channel of a process
    # from one receive loop keyed by that prefix, so a "readyz." channel would never be read while
    # a consumer (an agent's WebSocket) holds the loop.
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "readyz.ping"})
    message = await layer.receive(channel)
    if message.get("type") != "readyz.ping":
        raise RuntimeError("channel layer returned a different message")


async def _run(name: str, check) -> tuple[str, dict]:
    started = time.perf_counter()
    try:
        if asyncio.iscoroutinefunction(check):
            await asyncio.wait_for(check(), CHECK_TIMEOUT)
        else:
            await asyncio.wait_for(sync_to_async(check, thread_sensitive=name == "database")(), CHECK_TIMEOUT)
    except Exception as exc:  # any failure is a "not ready" answer, never a 500
        logger.warning("readiness check %s failed: %s", name, exc.__class__.__name__)
        return name, {"ok": False, "error": f"{exc.__class__.__name__}: {exc}"[:300]}
    return name, {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


async def readiness_report() -> dict[str, dict]:
    checks = {
        "database": _check_database,
        "cache": _check_cache,
        "channel_layer": _check_channel_layer,
        "broker": _check_broker,
    }
    results = await asyncio.gather(*(_run(name, check) for name, check in checks.items()))
    return dict(results)
