"""SQL statements per REST call and per decision, against the baselines in tests/query_counts.json.

A change that adds a query to a hot path fails here; after an intended change, refresh the file with
`UPDATE_QUERY_COUNTS=1 make test` (PYTEST_ARGS="tests/test_query_counts.py") and commit it. Statements are
counted at the driver (psycopg), so the ORM on any thread and the message path's async pool all count.
Each call is made once before it is measured: configuration caches are loaded then, as in a running process.
"""

import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apps.core import aio
from apps.engines.manager import SWITCH, register_engine
from apps.engines.testing import ScriptedEngine
from apps.messages import pipeline
from apps.messages.tests.factories import ConversationFactory, MessageFactory, ReplyFactory
from apps.messages.tests.helpers import make_agent, message, post
from conftest import requires_services

pytestmark = [requires_services, pytest.mark.django_db(transaction=True)]

BASELINES = Path(__file__).with_name("query_counts.json")
UPDATE = os.environ.get("UPDATE_QUERY_COUNTS") == "1"
measured: dict[str, int] = {}


@contextmanager
def statements():
    """Counts the statements sent to PostgreSQL by any thread of this process during the block."""
    count = [0]
    lock = threading.Lock()
    originals = {cls: cls.execute for cls in (psycopg.Cursor, psycopg.AsyncCursor)}

    def counted(original):
        def execute(self, query, *args, **kwargs):
            with lock:
                count[0] += 1
            return original(self, query, *args, **kwargs)

        return execute

    for cls, original in originals.items():
        cls.execute = counted(original)
    try:
        yield count
    finally:
        for cls, original in originals.items():
            cls.execute = original


def check(name: str, call) -> None:
    call()  # warm: configuration caches, pools
    with statements() as count:
        call()
    aio.run(aio.drain())
    measured[name] = count[0]
    if UPDATE:
        return
    baselines = json.loads(BASELINES.read_text())
    assert name in baselines, f"no baseline for {name!r}: run with UPDATE_QUERY_COUNTS=1"
    assert count[0] == baselines[name], f"{name}: {count[0]} statements, baseline {baselines[name]}"


@pytest.fixture(scope="module", autouse=True)
def _write_baselines():
    yield
    if UPDATE and measured:
        current = json.loads(BASELINES.read_text()) if BASELINES.exists() else {}
        BASELINES.write_text(json.dumps({**current, **measured}, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_agent_rest_calls():
    agent, token = make_agent()
    client = Client()
    reply = ReplyFactory(message=MessageFactory(conversation=ConversationFactory(agent=agent), status="decided"))
    check(
        "POST /api/v1/auth/login",
        lambda: client.post(
            "/api/v1/auth/login", {"agent_id": agent.id, "api_key": agent.secret}, content_type="application/json"
        ),
    )
    refresh_token = client.post(
        "/api/v1/auth/login", {"agent_id": agent.id, "api_key": agent.secret}, content_type="application/json"
    ).json()["refresh_token"]
    check(
        "POST /api/v1/auth/refresh",
        lambda: client.post("/api/v1/auth/refresh", {"refresh_token": refresh_token}, content_type="application/json"),
    )
    check(
        "POST /api/v1/heartbeat",
        lambda: client.post(
            "/api/v1/heartbeat",
            {"cpu": 3.5, "wx_online": True, "queue_size": 0},
            content_type="application/json",
            **bearer(token),
        ),
    )
    check("GET /api/v1/replies", lambda: client.get("/api/v1/replies", **bearer(token)))
    check("GET /api/v1/replies/<id>", lambda: client.get(f"/api/v1/replies/{reply.id}", **bearer(token)))
    check(
        "POST /api/v1/replies/<id>/ack",
        lambda: client.post(
            f"/api/v1/replies/{reply.id}/ack", {"status": "delivered"}, content_type="application/json", **bearer(token)
        ),
    )
    check("GET /api/v1/stats (agent)", lambda: client.get("/api/v1/stats?days=7", **bearer(token)))
    check(
        "POST /api/v1/conversations/takeover",
        lambda: client.post(
            "/api/v1/conversations/takeover",
            {"chat_name": "王五", "active": True},
            content_type="application/json",
            **bearer(token),
        ),
    )
    sent = iter(range(1000))
    check("POST /api/v1/messages", lambda: post(token, {"message": message(f"q-{next(sent)}")}))


def test_staff_rest_calls():
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("boss", password="pw-123456"))
    ReplyFactory()
    check("GET /api/v1/stats (staff)", lambda: client.get("/api/v1/stats?days=7"))
    check("GET /api/v1/customers/export", lambda: client.get("/api/v1/customers/export?format=json"))


def test_the_decision_path(settings):
    register_engine("scripted", ScriptedEngine)
    settings.ENGINE_DEFAULT = "scripted"
    SWITCH.forget()
    waiting = iter([MessageFactory() for _ in range(2)])

    def decide():
        message = next(waiting)
        assert aio.run(pipeline.process(message.id, message.conversation_id)) == "decided"

    check("decision: an engine reply pushed", decide)
