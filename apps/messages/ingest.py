"""The ingest hot path: validate, throttle, store (one `INSERT … ON CONFLICT` round trip per
message on PostgreSQL), enqueue `process_message` after commit.

Shared by REST (`POST /api/v1/messages`) and the WebSocket consumer (`message` / `messages` frames);
both call `ingest()` from a worker thread (`sync_to_async(thread_sensitive=False)`), so the event
loop never blocks and each request costs one thread hop.
"""

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.messages import queue

logger = logging.getLogger("wxcs.ingest")

CHAT_TYPES = ("private", "group")


class IngestError(Exception):
    status = 400

    def __init__(self, detail, code: str = "invalid", status: int | None = None, retry_after: int | None = None):
        super().__init__(str(detail))
        self.detail = detail
        self.code = code
        if status:
            self.status = status
        self.retry_after = retry_after


class Throttled(IngestError):
    status = 429


@dataclass
class Clean:
    client_msg_id: str
    chat_name: str
    chat_id: str
    chat_type: str
    sender: str
    content: str
    msg_type: str
    is_at_me: bool
    client_timestamp: datetime | None
    errors: dict = field(default_factory=dict)


@dataclass
class Accepted:
    client_id: str
    message_id: int
    conversation_id: int
    trace_id: str
    created: bool

    def as_dict(self) -> dict:
        return {
            "client_id": self.client_id,
            "message_id": self.message_id,
            "status": "accepted" if self.created else "duplicate",
            "duplicate": not self.created,
        }


def _str(value, name: str, errors: dict, *, required: bool = False, max_len: int = 200, default: str = "") -> str:
    if value is None or value == "":
        if required:
            errors[name] = ["This field is required."]
        return default
    if isinstance(value, bool) or not isinstance(value, str | int):
        errors[name] = ["Must be a string."]
        return default
    value = str(value)
    if len(value) > max_len:
        errors[name] = [f"Ensure this field has no more than {max_len} characters."]
    return value


def _timestamp(value, errors: dict) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int | float):
            seconds = value / 1000 if value > 1e11 else value  # epoch ms or s
            return datetime.fromtimestamp(seconds, tz=UTC)
        if isinstance(value, str):
            try:
                return _timestamp(float(value), errors)
            except ValueError:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
                return parsed if parsed.tzinfo else timezone.make_aware(parsed)
    except (ValueError, OverflowError, OSError):
        pass
    errors["timestamp"] = ["Expected epoch seconds/milliseconds or an ISO 8601 datetime."]
    return None


def validate(item) -> Clean:
    """Field errors in `.errors` (DRF style: field → [messages])."""
    errors: dict = {}
    if not isinstance(item, dict):
        return Clean("", "", "", "", "", "", "", False, None, {"message": ["Expected an object."]})
    client_id = _str(item.get("id", item.get("client_msg_id")), "id", errors, required=True, max_len=128)
    chat_id = _str(item.get("chat_id"), "chat_id", errors)
    chat_name = _str(item.get("chat_name") or item.get("chat"), "chat_name", errors) or chat_id
    if not chat_name and "chat_name" not in errors and "chat_id" not in errors:
        errors["chat_name"] = ["chat_name or chat_id is required."]
    chat_type = item.get("chat_type") or "private"
    if chat_type not in CHAT_TYPES:
        errors["chat_type"] = [f'"{chat_type}" is not a valid choice (private, group).']
    sender = _str(item.get("sender"), "sender", errors)
    content = item.get("content")
    max_chars = settings.MESSAGE_MAX_CHARS
    if content is None or content == "":
        errors["content"] = ["This field is required."]
        content = ""
    elif not isinstance(content, str):
        errors["content"] = ["Must be a string."]
        content = ""
    elif len(content) > max_chars:
        errors["content"] = [f"Ensure this field has no more than {max_chars} characters (got {len(content)})."]
    msg_type = _str(item.get("type"), "type", errors, max_len=20, default="text")
    is_at_me = item.get("is_at_me", False)
    if not isinstance(is_at_me, bool):
        errors["is_at_me"] = ["Must be a boolean."]
        is_at_me = False
    return Clean(
        client_id,
        chat_name,
        chat_id,
        chat_type,
        sender,
        content,
        msg_type,
        is_at_me,
        _timestamp(item.get("timestamp"), errors),
        errors,
    )


# --- throttle -----------------------------------------------------------------------------------
def throttle(agent_id: str, count: int = 1) -> None:
    """Fixed-window counter per agent in Redis (INCRBY + EXPIRE in one round trip)."""
    limit = settings.INGEST_RATE_LIMIT
    if not limit:
        return
    window = settings.INGEST_RATE_WINDOW
    now = int(time.time())
    bucket = now // window
    key = f"wxcs:ingest-rate:{agent_id}:{bucket}"
    try:
        client = queue.redis_client()
        if client is not None:
            pipe = client.pipeline(transaction=False)
            pipe.incrby(key, count)
            pipe.expire(key, window + 1)
            used = pipe.execute()[0]
        else:
            from django.core.cache import cache

            cache.add(key, 0, window + 1)
            used = cache.incr(key, count)
    except Exception:  # Redis trouble must not stop ingest
        logger.warning("ingest throttle unavailable", exc_info=True)
        return
    if used > limit:
        retry_after = max(1, (bucket + 1) * window - now)
        raise Throttled(f"rate limit of {limit} messages per {window}s exceeded", "throttled", 429, retry_after)


# --- store --------------------------------------------------------------------------------------
_PG_SQL = """
WITH conv AS (
    INSERT INTO wxmessages_conversation AS c
        (agent_id, chat_name, chat_id, chat_type, taken_over, engine_override, created_at, last_message_at)
    VALUES (%(agent)s, %(chat)s, %(chat_id)s, %(chat_type)s, false, '', %(now)s, %(now)s)
    ON CONFLICT (agent_id, chat_name) DO UPDATE SET last_message_at = EXCLUDED.last_message_at
    RETURNING c.id
), ins AS (
    INSERT INTO wxmessages_message
        (agent_id, conversation_id, client_msg_id, trace_id, sender, content, msg_type, is_at_me,
         client_timestamp, received_at, status, attempts, error)
    SELECT %(agent)s, conv.id, %(cid)s, %(trace)s, %(sender)s, %(content)s, %(type)s, %(at)s,
           %(ts)s, %(now)s, 'received', 0, ''
    FROM conv
    ON CONFLICT (agent_id, client_msg_id) DO NOTHING
    RETURNING id, conversation_id, trace_id
)
SELECT id, conversation_id, trace_id, true FROM ins
UNION ALL
SELECT id, conversation_id, trace_id, false FROM wxmessages_message
WHERE agent_id = %(agent)s AND client_msg_id = %(cid)s
"""

_EXISTING_SQL = (
    "SELECT id, conversation_id, trace_id FROM wxmessages_message WHERE agent_id = %s AND client_msg_id = %s"
)


def _params(agent_id: str, item: Clean, now: datetime, trace) -> dict:
    return {
        "agent": agent_id,
        "chat": item.chat_name,
        "chat_id": item.chat_id,
        "chat_type": item.chat_type,
        "now": now,
        "cid": item.client_msg_id,
        "trace": trace,
        "sender": item.sender,
        "content": item.content,
        "type": item.msg_type,
        "at": item.is_at_me,
        "ts": item.client_timestamp,
    }


def _store_pg(cursor, agent_id: str, item: Clean, now: datetime) -> Accepted:
    cursor.execute(_PG_SQL, _params(agent_id, item, now, uuid.uuid4()))
    row = cursor.fetchone()
    if row is None:  # a concurrent duplicate committed after our snapshot: read it now
        cursor.execute(_EXISTING_SQL, [agent_id, item.client_msg_id])
        row = (*cursor.fetchone(), False)
    return Accepted(item.client_msg_id, row[0], row[1], str(row[2]), bool(row[3]))


def _store_generic(cursor, agent_id: str, item: Clean, now: datetime) -> Accepted:
    """SQLite (embedded default): three small statements inside the caller's transaction."""
    p = _params(agent_id, item, now, uuid.uuid4().hex)
    cursor.execute(
        "INSERT INTO wxmessages_conversation (agent_id, chat_name, chat_id, chat_type, taken_over,"
        " engine_override, created_at, last_message_at) VALUES (%s, %s, %s, %s, false, '', %s, %s)"
        " ON CONFLICT (agent_id, chat_name) DO UPDATE SET last_message_at = excluded.last_message_at RETURNING id",
        [p["agent"], p["chat"], p["chat_id"], p["chat_type"], now, now],
    )
    conversation_id = cursor.fetchone()[0]
    cursor.execute(
        "INSERT INTO wxmessages_message (agent_id, conversation_id, client_msg_id, trace_id, sender, content,"
        " msg_type, is_at_me, client_timestamp, received_at, status, attempts, error)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'received', 0, '')"
        " ON CONFLICT (agent_id, client_msg_id) DO NOTHING RETURNING id, conversation_id, trace_id",
        [
            p["agent"],
            conversation_id,
            p["cid"],
            p["trace"],
            p["sender"],
            p["content"],
            p["type"],
            p["at"],
            p["ts"],
            now,
        ],
    )
    row = cursor.fetchone()
    created = row is not None
    if not created:
        cursor.execute(_EXISTING_SQL, [agent_id, item.client_msg_id])
        row = cursor.fetchone()
    return Accepted(item.client_msg_id, row[0], row[1], str(row[2]), created)


def store(agent_id: str, items: list[Clean]) -> list[Accepted]:
    """Upsert conversations + insert messages; one transaction for the batch."""
    now = timezone.now()
    if connection.vendor == "sqlite":
        # Django's SQLite adapter wants naive/ISO values the way the ORM writes them.
        from django.db.models import DateTimeField

        field_ = DateTimeField()
        now_db = field_.get_db_prep_value(now, connection)
        for item in items:
            if item.client_timestamp:
                item.client_timestamp = field_.get_db_prep_value(item.client_timestamp, connection)
        store_one, now = _store_generic, now_db
    else:
        store_one = _store_pg
    if len(items) == 1 and store_one is _store_pg and connection.get_autocommit():
        # one statement is its own transaction: no BEGIN/COMMIT round trips
        with connection.cursor() as cursor:
            return [store_one(cursor, agent_id, items[0], now)]
    with transaction.atomic(), connection.cursor() as cursor:
        return [store_one(cursor, agent_id, item, now) for item in items]


def ingest(agent_id: str, items: list[Clean]) -> list[Accepted]:
    """Throttle, store, then enqueue the new messages (after commit). Sync; call from a worker thread."""
    throttle(agent_id, len(items))
    accepted = store(agent_id, items)
    new = [(a.message_id, a.conversation_id) for a in accepted if a.created]
    if new:
        queue.enqueue_messages(new)
    return accepted
