"""The ingest hot path without threads, for the long-lived event loop of a web process (Daphne):
psycopg's AsyncConnectionPool (server-side prepared statement, autocommit: one round trip per
message) and redis.asyncio (throttle counter, then one LPUSH of pre-serialised Celery messages, shared
by the requests of one event-loop turn: EnqueueBatcher).
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

_state: dict = {}  # loop -> (pool, cache redis, broker redis, EnqueueBatcher on the broker)
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
            state = _state[loop] = (pool, cache, broker, EnqueueBatcher(broker))
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
    pool, cache, broker, batcher = await _resources()
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
    key = f"wxcs:ingest-rate:{agent_id}:{epoch // window}" if limit else None
    try:
        if broker is cache:
            counted = await batcher.submit(key, len(items), new)
        else:
            counted = None
            if key:
                async with cache.pipeline(transaction=False) as pipe:
                    counted = (await pipe.incrby(key, len(items)).expire(key, window + 1).execute())[0]
            if new:
                await batcher.submit(None, 0, new)
    except Exception:  # stored but maybe not enqueued: the sync publisher in a thread
        logger.warning("async enqueue failed; using the sync path", exc_info=True)
        from asgiref.sync import sync_to_async

        await sync_to_async(queue.enqueue_messages, thread_sensitive=False)(new)
        return accepted
    if counted is not None and counted > limit:
        window_end = (epoch // window + 1) * window
        _blocked[agent_id] = (time.monotonic() + (window_end - epoch), window_end - epoch)
    return accepted


class EnqueueBatcher:
    """Requests that reach the enqueue step in the same event-loop turn share one Redis pipeline: each
    one's throttle counter (INCRBY + EXPIRE) and one LPUSH of all their messages, as `process_messages`
    batches (queue.wire_messages). Under a burst of single-message POSTs the worker's consumer then
    receives a task per batch instead of one per message; alone, a request still goes out at once."""

    def __init__(self, redis):
        self.redis = redis
        self.pending: list = []
        self.flushing: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    def submit(self, key: str | None, count: int, new: list) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not key and not new:
            future.set_result(None)
            return future
        if not self.pending:
            loop.call_soon(self._start_flush)
        self.pending.append((key, count, new, future))
        return future

    def _start_flush(self) -> None:
        task = asyncio.get_running_loop().create_task(self._flush())
        self.flushing.add(task)
        task.add_done_callback(self.flushing.discard)

    async def _flush(self) -> None:
        batch, self.pending = self.pending, []
        window = settings.INGEST_RATE_WINDOW
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, count, _new, _future in batch:
                    if key:
                        pipe.incrby(key, count).expire(key, window + 1)
                messages = [pair for _key, _count, new, _future in batch for pair in new]
                if messages:
                    pipe.lpush(queue.QUEUE, *queue.wire_messages(messages))
                results = iter(await pipe.execute())
        except Exception as exc:  # noqa: BLE001 - every request of the batch falls back on its own
            for *_rest, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for key, _count, _new, future in batch:
            counted = None
            if key:
                counted = next(results)
                next(results)  # EXPIRE
            if not future.done():
                future.set_result(counted)


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
        pool, cache, broker, _batcher = state
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
    pool, *_ = await _resources()
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
    pool, *_ = await _resources()
    async with pool.connection() as conn:
        await conn.execute(_SENT_SQL, [timezone.now(), agent_id, list(reply_ids)])
