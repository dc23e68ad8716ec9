"""The ingest hot path without threads, for the long-lived event loop of a web process (Daphne):
psycopg's AsyncConnectionPool (server-side prepared statement, autocommit: one round trip per
message) and redis.asyncio (throttle counter, then one LPUSH of pre-serialised Celery messages).
Same SQL, same semantics as `ingest.ingest`; used only on PostgreSQL + Redis, else the sync path.
"""

import asyncio
import logging
import time
import uuid

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.messages import queue, services
from apps.messages.ingest import _EXISTING_SQL, _PG_SQL, Accepted, Clean, Throttled, _params

logger = logging.getLogger("wxcs.ingest")

_state: dict = {}  # loop -> (pool, cache redis, broker redis)
_lock: asyncio.Lock | None = None


def available() -> bool:
    return (
        connection.vendor == "postgresql"
        and settings.CACHES["default"]["BACKEND"].startswith("django_redis")
        and settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://", "redis+socket://"))
        and settings.PIPELINE_FAST_ENQUEUE
    )


def _conninfo() -> str:
    from psycopg.conninfo import make_conninfo

    db = connection.settings_dict
    params = {
        "dbname": db["NAME"],
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": str(db["PORT"]) if db.get("PORT") else None,
    }
    return make_conninfo(**{k: v for k, v in params.items() if v})


def _redis(url: str):
    import redis.asyncio as aredis

    if url.startswith("redis+socket://"):
        path, _, query = url[len("redis+socket://") :].partition("?")
        db = next((int(p.split("=", 1)[1] or 0) for p in query.split("&") if p.startswith("virtual_host=")), 0)
        return aredis.Redis(unix_socket_path=path, db=db)
    return aredis.Redis.from_url(url)


async def _resources():
    global _lock
    loop = asyncio.get_running_loop()
    state = _state.get(loop)
    if state is not None:
        return state
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        state = _state.get(loop)
        if state is None:
            from psycopg_pool import AsyncConnectionPool

            pool = AsyncConnectionPool(
                _conninfo(),
                min_size=1,
                max_size=settings.INGEST_DB_POOL,
                open=False,
                kwargs={"autocommit": True},
                name="wxcs-ingest",
            )
            await pool.open()
            cache_url = settings.CACHES["default"]["LOCATION"]
            broker_url = settings.CELERY_BROKER_URL
            cache = _redis(cache_url)
            broker = cache if broker_url == cache_url else _redis(broker_url)
            state = _state[loop] = (pool, cache, broker)
    return state


_blocked: dict[str, tuple[float, int]] = {}  # agent -> (monotonic time the window ends, retry_after)


def _check_blocked(agent_id: str) -> None:
    hit = _blocked.get(agent_id)
    if hit is None:
        return
    until, _ = hit
    remaining = until - time.monotonic()
    if remaining <= 0:
        _blocked.pop(agent_id, None)
        return
    limit, window = settings.INGEST_RATE_LIMIT, settings.INGEST_RATE_WINDOW
    raise Throttled(
        f"rate limit of {limit} messages per {window}s exceeded", "throttled", 429, max(1, int(remaining + 0.999))
    )


async def ingest(agent_id: str, items: list[Clean]) -> list[Accepted]:
    """Throttle accounting rides on the enqueue round trip (INCRBY + EXPIRE + LPUSH in one pipeline):
    the request that crosses the limit is still accepted and the agent is refused (429) from then on
    until the window ends — per web process at most one message over the limit per window."""
    _check_blocked(agent_id)
    pool, cache, broker = await _resources()
    now = timezone.now()
    accepted = []
    async with pool.connection() as conn:
        if len(items) == 1:
            accepted.append(await _store(conn, agent_id, items[0], now))
        else:
            # pipeline mode: every INSERT of the batch in one network round trip, one transaction
            async with conn.transaction(), conn.pipeline():
                cursors = [await conn.execute(_PG_SQL, _params(agent_id, item, now, uuid.uuid4())) for item in items]
                rows = [await cursor.fetchone() for cursor in cursors]
            for item, row in zip(items, rows, strict=True):
                if row is None:  # concurrent duplicate (rare): read it back
                    cursor = await conn.execute(_EXISTING_SQL, [agent_id, item.client_msg_id])
                    row = (*(await cursor.fetchone()), False)
                accepted.append(Accepted(item.client_msg_id, row[0], row[1], str(row[2]), bool(row[3])))
    new = [(a.message_id, a.conversation_id) for a in accepted if a.created]
    limit = settings.INGEST_RATE_LIMIT
    window = settings.INGEST_RATE_WINDOW
    epoch = int(time.time())
    key = f"wxcs:ingest-rate:{agent_id}:{epoch // window}"
    try:
        if broker is cache:
            async with broker.pipeline(transaction=False) as pipe:
                if limit:
                    pipe.incrby(key, len(items)).expire(key, window + 1)
                if new:
                    pipe.lpush(queue.QUEUE, *queue.wire_messages(new))
                results = await pipe.execute() if (limit or new) else []
        else:
            results = []
            if limit:
                async with cache.pipeline(transaction=False) as pipe:
                    results = await pipe.incrby(key, len(items)).expire(key, window + 1).execute()
            if new:
                await broker.lpush(queue.QUEUE, *queue.wire_messages(new))
    except Exception:  # stored but maybe not enqueued: the sync publisher in a thread
        logger.warning("async enqueue failed; using the sync path", exc_info=True)
        from asgiref.sync import sync_to_async

        await sync_to_async(queue.enqueue_messages, thread_sensitive=False)(new)
        return accepted
    if limit and results and results[0] > limit:
        window_end = (epoch // window + 1) * window
        _blocked[agent_id] = (time.monotonic() + (window_end - epoch), window_end - epoch)
    return accepted


async def _store(conn, agent_id: str, item: Clean, now) -> Accepted:
    cursor = await conn.execute(_PG_SQL, _params(agent_id, item, now, uuid.uuid4()))
    row = await cursor.fetchone()
    if row is None:
        cursor = await conn.execute(_EXISTING_SQL, [agent_id, item.client_msg_id])
        row = (*(await cursor.fetchone()), False)
    return Accepted(item.client_msg_id, row[0], row[1], str(row[2]), bool(row[3]))


async def close() -> None:
    """Close this loop's pool and Redis clients (tests; a web process keeps them for its lifetime)."""
    state = _state.pop(asyncio.get_running_loop(), None)
    if state is not None:
        pool, cache, broker = state
        await pool.close()
        await cache.aclose()
        if broker is not cache:
            await broker.aclose()


# --- outbox bookkeeping from the WebSocket consumer, same pool, no threads ---------------------------
_ACK_SQL = (
    "UPDATE wxmessages_reply AS r SET status = %s, acked_at = %s, delivery_error = %s"
    " FROM wxmessages_message AS m"
    " WHERE r.id = %s AND r.agent_id = %s AND r.status IN ('queued', 'sent') AND m.id = r.message_id"
    " RETURNING m.trace_id"
)
_SENT_SQL = (
    "UPDATE wxmessages_reply SET status = 'sent', pushed_at = %s, delivery_attempts = delivery_attempts + 1"
    " WHERE agent_id = %s AND id = ANY(%s) AND status IN ('queued', 'sent')"
)


async def ack(agent_id: str, reply_id: int, status: str, error: str) -> dict:
    """Same contract as services.ack (validated by the caller)."""
    pool, _, _ = await _resources()
    async with pool.connection() as conn:
        cursor = await conn.execute(_ACK_SQL, [status, timezone.now(), error[:2000], reply_id, agent_id])
        acked = await cursor.fetchone()
        if acked:
            services.log_ack(reply_id, status, error, acked[0])
            return {"reply_id": reply_id, "status": status, "changed": True}
        cursor = await conn.execute(
            "SELECT status FROM wxmessages_reply WHERE id = %s AND agent_id = %s", [reply_id, agent_id]
        )
        row = await cursor.fetchone()
    if row is None:
        raise LookupError(reply_id)
    return {"reply_id": reply_id, "status": row[0], "changed": False}


async def mark_sent(agent_id: str, reply_ids: list[int]) -> None:
    pool, _, _ = await _resources()
    async with pool.connection() as conn:
        await conn.execute(_SENT_SQL, [timezone.now(), agent_id, list(reply_ids)])
