import asyncio
import json
import logging
import time
import uuid

import pytest
from django.test import Client

from apps.core import redis
from apps.core.tests.helpers import staff_user
from apps.core.tracing import JsonFormatter, TraceIdFilter, bind, current_trace_id
from apps.monitoring import tracing
from apps.monitoring.models import VIEW_TRACE
from apps.monitoring.tests.factories import TimedReplyFactory
from apps.monitoring.tests.live import worker_and_daphne

pytestmark = pytest.mark.django_db


@pytest.fixture
def trace_logger():
    """A logger wired like settings.LOGGING (filter + trace store), independent of pytest's capture."""
    logger = logging.getLogger("wxcs.test.trace")
    handler = tracing.TraceStoreHandler()
    handler.addFilter(TraceIdFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the root logger's own trace_store handler would store each line twice
    yield logger
    logger.removeHandler(handler)
    logger.propagate = True


def test_bound_trace_id_follows_async_tasks_and_is_stored_per_trace(trace_logger):
    trace_id = uuid.uuid4()

    async def provider_call():
        await asyncio.sleep(0)
        trace_logger.info("provider answered")

    with bind(trace_id) as bound:
        assert bound == trace_id.hex == current_trace_id()
        trace_logger.info("ingest %s", "ok")
        asyncio.run(provider_call())
    trace_logger.info("outside any trace")

    assert current_trace_id() == ""
    events = tracing.events(str(trace_id))  # the dashed form finds the same trace
    assert [event["message"] for event in events] == ["ingest ok", "provider answered"]
    assert all(event["trace_id"] == trace_id.hex for event in events)


def test_trace_store_is_bounded(trace_logger, settings):
    settings.TRACE_MAX_EVENTS = 5
    with bind("t-bounded"):
        for i in range(12):
            trace_logger.info("step %d", i)
    assert [event["message"] for event in tracing.events("t-bounded")] == [f"step {i}" for i in range(7, 12)]


def test_trace_lines_are_stored_in_the_background_and_bounded_while_waiting(trace_logger, settings):
    """The handler only queues; the writer thread stores the lines without anyone calling flush(), and
    a queue that cannot be written is capped (oldest dropped, counted)."""
    with bind("t-background"):
        trace_logger.info("queued, not yet stored")
    deadline = time.monotonic() + 5
    stored = []
    while time.monotonic() < deadline and not stored:
        stored = redis.client().lrange(tracing.trace_key("t-background"), 0, -1)  # read without flushing
        time.sleep(0.02)
    assert [json.loads(item)["message"] for item in stored] == ["queued, not yet stored"]

    settings.TRACE_BUFFER_MAX = 3
    writer = tracing.TraceWriter()
    dropped_before = writer.dropped
    for i in range(5):
        writer.put("t-capped", json.dumps({"message": f"line {i}"}))
    writer.flush()
    assert writer.dropped - dropped_before == 2
    assert [event["message"] for event in tracing.events("t-capped")] == ["line 2", "line 3", "line 4"]


def test_json_formatter_emits_one_object_with_the_trace_id():
    record = logging.LogRecord("apps.messages", logging.WARNING, __file__, 1, "规则 %s 命中", ("退款",), None)
    with bind("abc123"):
        TraceIdFilter().filter(record)
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == "规则 退款 命中"
    assert data["trace_id"] == "abc123" and data["level"] == "WARNING" and data["logger"] == "apps.messages"


def test_admin_trace_views_show_a_conversations_log_lines(client, trace_logger):
    reply = TimedReplyFactory()
    message = reply.message
    with bind(message.trace_id):
        trace_logger.info("rules: no match")
        trace_logger.info("delivered reply %s", reply.pk)

    url = f"/dashboard/conversations/{message.conversation_id}/trace/"
    assert client.get(url).status_code == 302  # staff only
    staff_user("ops", VIEW_TRACE, password="x-Pa55-word")
    client.login(username="ops", password="x-Pa55-word")
    page = client.get(url).content.decode()
    assert "rules: no match" in page and f"delivered reply {reply.pk}" in page and message.trace_id.hex in page
    assert "rules: no match" in client.get(f"/dashboard/traces/{message.trace_id}/").content.decode()
    assert client.get("/dashboard/conversations/999999/trace/").status_code == 404


def test_settings_logging_stores_traced_lines_once():
    with bind("t-settings"):
        logging.getLogger("apps.messages.tasks").warning("decided by rule")
    assert [event["message"] for event in tracing.events("t-settings")] == ["decided by rule"]


def test_celery_worker_loggers_are_adopted(settings):
    """Celery swaps the root/task handlers for its own; adopt_celery_logger gives them trace id, JSON, store."""
    import io

    from apps.monitoring.apps import adopt_celery_logger

    settings.LOG_JSON = True
    stream = io.StringIO()
    logger = logging.getLogger("celery.task.test-adopt")
    logger.handlers = [logging.StreamHandler(stream)]
    logger.propagate = False
    try:
        adopt_celery_logger(logger)
        adopt_celery_logger(logger)  # Celery may call it twice (root and task loggers): still one store
        with bind("t-celery"):
            logger.warning("llm call took %d ms", 812)
    finally:
        logger.handlers = []
        logger.propagate = True
    assert json.loads(stream.getvalue().splitlines()[0])["trace_id"] == "t-celery"
    assert [event["message"] for event in tracing.events("t-celery")] == ["llm call took 812 ms"]


@pytest.mark.e2e
def test_a_messages_trace_is_kept_from_the_real_pipeline_worker(live_env, tmp_path):
    """POST a customer message to a real Daphne; the real Celery worker decides it under the message's
    trace id; the admin trace view shows the worker's log line for that message."""
    import httpx

    from apps.agents.auth import issue_tokens
    from apps.agents.tests.factories import AgentFactory
    from apps.messages.models import Message

    env = {
        **live_env,
        "ENGINE_DEFAULT": "echo",  # apps.engines.testing registers it in test workers
        "ECHO_ENGINE_DELAY": "0",
        "INGEST_RATE_LIMIT": "0",
    }
    agent = AgentFactory()
    token = issue_tokens(agent.id)["access_token"]
    with worker_and_daphne(env, env, tmp_path) as (worker, _, base_url):
        message = {
            "id": "trace-1",
            "chat_name": "李四",
            "chat_type": "private",
            "sender": "李四",
            "content": "你好，请问发票怎么开？",
            "type": "text",
            "timestamp": 1764000000,
            "is_at_me": False,
        }
        answer = httpx.post(
            f"{base_url}/api/v1/messages?wait=15",
            json={"message": message},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
    stored = Message.objects.get(agent=agent, client_msg_id="trace-1")
    deadline = time.monotonic() + 5  # the worker's trace writer stores its lines in the background
    while not any(f"message {stored.id} decided" in event["message"] for event in tracing.events(stored.trace_id)):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    events = tracing.events(stored.trace_id)
    assert any(f"message {stored.id} decided" in event["message"] for event in events), worker.log_tail()
    assert {event["trace_id"] for event in events} == {stored.trace_id.hex}

    staff_user("ops", VIEW_TRACE, password="x-Pa55-word")
    client = Client()
    client.login(username="ops", password="x-Pa55-word")
    page = client.get(f"/dashboard/conversations/{stored.conversation_id}/trace/").content.decode()
    assert f"message {stored.id} decided" in page
