"""Cheap enqueueing of `process_message`, and the Redis client the pipeline uses.

`.delay()` costs ≈ 1 ms of CPU per message (../shared/ARCHITECTURE.md). With a Redis broker we
publish the same Celery protocol-2 message a `.delay()` would, pre-serialised from a template, with
one LPUSH for a whole batch (≈ 10 µs per message). Anything else (memory:// broker in tests, or
PIPELINE_FAST_ENQUEUE=false) goes through Celery's `send_task` with one shared producer.
"""

import base64
import json
import logging
import os
import socket
import threading
import uuid

from django.conf import settings

logger = logging.getLogger("wxcs.ingest")

TASK_NAME = "apps.messages.tasks.process_message"
BATCH_TASK_NAME = "apps.messages.tasks.process_messages"
QUEUE = "messages"

_local = threading.local()
_origin = f"{os.getpid()}@{socket.gethostname()}"


def redis_client():
    """The cache's redis-py client (django-redis), or None when the cache is not Redis."""
    try:
        from django_redis import get_redis_connection

        return get_redis_connection("default")
    except Exception:
        return None


def _broker_client():
    client = getattr(_local, "broker", None)
    if client is None:
        import redis

        url = settings.CELERY_BROKER_URL
        if url.startswith("redis+socket://"):
            # kombu's unix-socket URL: redis+socket:///path?virtual_host=N
            path, _, query = url[len("redis+socket://") :].partition("?")
            db = 0
            for part in query.split("&"):
                if part.startswith("virtual_host="):
                    db = int(part.split("=", 1)[1] or 0)
            client = redis.Redis(unix_socket_path=path, db=db)
        else:
            client = redis.Redis.from_url(url)
        _local.broker = client
    return client


def _fast_enabled() -> bool:
    return settings.PIPELINE_FAST_ENQUEUE and settings.CELERY_BROKER_URL.startswith(
        ("redis://", "rediss://", "redis+socket://")
    )


def task_calls(messages: list) -> list[tuple[str, list, dict]]:
    """(task name, args, kwargs) to enqueue for these messages (ids or (id, conversation id) pairs): a
    `process_message` each, except that a batch (an agent's `messages` frame) becomes `process_messages`
    tasks of up to PIPELINE_ENQUEUE_BATCH messages — the worker's consumer receives tasks one by one,
    and that is its bottleneck under bursts."""
    calls = []
    for chunk in _chunks(_pairs(messages)):
        if len(chunk) > 1:
            calls.append((BATCH_TASK_NAME, [[list(pair) for pair in chunk]], {}))
        else:
            message_id, conversation_id = chunk[0]
            calls.append((TASK_NAME, [message_id], {"conversation_id": conversation_id} if conversation_id else {}))
    return calls


def wire_messages(messages: list) -> list[bytes]:
    """What to LPUSH for these messages: the kombu/Redis wire form of each of `task_calls(messages)`."""
    return [_wire(*call) for call in task_calls(messages)]


def _chunks(pairs: list[tuple[int, int | None]]) -> list[list[tuple[int, int | None]]]:
    size = max(1, settings.PIPELINE_ENQUEUE_BATCH)
    return [pairs[i : i + size] for i in range(0, len(pairs), size)]


def _wire(task_name: str, args: list, kwargs: dict) -> bytes:
    """What `apply_async(args, kwargs, queue="messages")` of that task would publish."""
    task_id = str(uuid.uuid4())
    body = base64.b64encode(
        json.dumps([args, kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]).encode()
    ).decode()
    return json.dumps(
        {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": task_name,
                "id": task_id,
                "shadow": None,
                "eta": None,
                "expires": None,
                "group": None,
                "group_index": None,
                "retries": 0,
                "timelimit": [None, None],
                "root_id": task_id,
                "parent_id": None,
                "argsrepr": repr(tuple(args)),
                "kwargsrepr": repr(kwargs),
                "origin": _origin,
                "ignore_result": False,
                "replaced_task_nesting": 0,
                "stamped_headers": None,
                "stamps": {},
            },
            "properties": {
                "correlation_id": task_id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": QUEUE, "routing_key": QUEUE},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()


def _pairs(messages) -> list[tuple[int, int | None]]:
    return [m if isinstance(m, tuple) else (m, None) for m in messages]


def enqueue_messages(messages: list) -> None:
    """`messages`: message ids, or (message id, conversation id) pairs (saves the worker a query)."""
    if not messages:
        return
    if _fast_enabled():
        try:
            _broker_client().lpush(QUEUE, *wire_messages(messages))
            return
        except Exception:
            _local.broker = None
            logger.warning("fast enqueue failed; falling back to send_task", exc_info=True)
    from celery_app import app

    with app.producer_or_acquire() as producer:
        for name, args, kwargs in task_calls(messages):
            app.send_task(name, args, kwargs, queue=QUEUE, producer=producer)
