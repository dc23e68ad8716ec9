"""Hostile or odd input, through the real ASGI application (REST ingest on ASGI, the DRF API, the agent
WebSocket): each is refused with a 4xx `{detail, code}` or an error frame, the rest of its batch is stored, and
nothing stored can make /metrics, /dashboard/, the alert rules or admin fail for anyone."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apps.agents.models import Agent
from apps.agents.tests.factories import AgentFactory
from apps.messages.models import Message
from apps.messages.tests.helpers import frames_until, make_agent, message, post, ws_session
from apps.monitoring import services as monitoring_services
from apps.monitoring.models import AlertRule

pytestmark = pytest.mark.django_db(transaction=True)

DEEP = "[" * 5000 + "]" * 5000  # deeper than Python's JSON decoder can recurse
NESTED_33 = {"message": message("deep-1", extra=json.loads("[" * 33 + "]" * 33))}  # just over JSON_MAX_DEPTH
YEAR_1999 = 915148800
FAR_FUTURE_MS = 4102444800000  # 2100-01-01 in milliseconds
HEARTBEAT = "/api/v1/heartbeat"


def stored_ids(agent) -> set[str]:
    return set(Message.objects.filter(agent=agent).values_list("client_msg_id", flat=True))


def assert_pages_answer() -> None:
    """/metrics and /dashboard/ (with its snapshot) still answer for everyone else."""
    staff = Client()
    staff.force_login(get_user_model().objects.create_superuser(f"boss{Agent.objects.count()}", password="x-Pa55"))
    assert Client().get("/metrics").status_code == 200
    assert staff.get("/dashboard/").status_code == 200 and staff.get("/dashboard/snapshot").status_code == 200


# --- REST ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [DEEP, json.dumps(NESTED_33)])
@pytest.mark.parametrize(
    "path", ["/api/v1/messages", "/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/heartbeat"]
)
def test_deep_nesting_is_400_too_deep_on_every_rest_door(path, body):
    _, token = make_agent()
    response = post(token, body, path=path)
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": response.json()["detail"], "code": "too_deep"}
    assert Message.objects.count() == 0


@pytest.mark.parametrize(
    "path", ["/api/v1/messages", "/api/v1/auth/login", "/api/v1/heartbeat", "/api/v1/replies/1/ack"]
)
def test_a_huge_body_is_413_on_every_rest_door(path):
    _, token = make_agent()
    response = post(token, json.dumps({"message": message("huge"), "padding": "x" * 300_000}), path=path)
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "too_large" and response.json()["detail"]


def test_nan_and_infinity_are_malformed_json():
    _, token = make_agent()
    for body in ('{"message": {"id": "n", "chat_name": "x", "content": "x", "extra": NaN}}', '{"cpu": Infinity}'):
        for path in ("/api/v1/messages", "/api/v1/heartbeat"):
            response = post(token, body, path=path)
            assert response.status_code == 400 and response.json()["code"] == "malformed", (path, response.text)


@pytest.mark.parametrize(
    "timestamp", [YEAR_1999, FAR_FUTURE_MS, "0001-01-01T00:00:00", "9999-12-31T23:59:59Z", 10**20, -1]
)
def test_timestamps_outside_the_window_are_400_naming_the_field(timestamp):
    _, token = make_agent()
    response = post(token, {"message": message("ts", timestamp=timestamp)})
    assert response.status_code == 400, response.text
    assert "timestamp" in response.json()["detail"]["message"]
    assert post(token, {"message": message("ts-ok", timestamp=1764000000123)}).status_code == 202  # ms is fine


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/auth/login", {"agent_id": "agt\x00x", "api_key": "k"}, "agent_id"),
        ("/api/v1/auth/login", {"agent_id": "agt_x", "api_key": "\ud800"}, "api_key"),
        ("/api/v1/auth/refresh", {"refresh_token": "a\ud800b"}, "refresh_token"),
        ("/api/v1/replies/1/ack", {"status": "failed", "error": "\x00"}, "error"),
        ("/api/v1/conversations/takeover", {"chat_name": "张\ud800三"}, "chat_name"),
        ("/api/v1/heartbeat", {"agent_version": "1.0\x00"}, "agent_version"),
        ("/api/v1/heartbeat", {"versions": {"wechat\ud800": "3.9"}}, "versions"),
    ],
)
def test_nul_and_lone_surrogates_are_400_naming_the_field_on_the_drf_api(path, body, field):
    _, token = make_agent()
    response = post(token, json.dumps(body), path=path)  # json.dumps writes the surrogate as the escape "\ud800"
    assert response.status_code == 400, response.text
    detail = response.json().get("detail", response.json())
    assert field in detail, response.text


def test_heartbeat_is_one_typed_schema_unknown_fields_dropped(settings):
    agent, token = make_agent(queue_size=3)
    refused = post(token, {"queue_size": "many", "cpu": "hot"}, path="/api/v1/heartbeat")
    assert refused.status_code == 400 and set(refused.json()["detail"]) == {"queue_size", "cpu"}
    blob = post(
        token, {"queue_size": 1, "versions": {f"k{i}": "v" * 100 for i in range(150)}}, path="/api/v1/heartbeat"
    )
    assert blob.status_code == 413 and blob.json()["code"] == "too_large"  # 16 KiB as a whole
    assert Agent.objects.get(pk=agent.pk).last_heartbeat == {"queue_size": 3}  # nothing of either stored
    ok = post(token, {"queue_size": 5, "secret_stash": "x" * 1000, "wx_online": True}, path="/api/v1/heartbeat")
    assert ok.status_code == 200, ok.text
    assert Agent.objects.get(pk=agent.pk).last_heartbeat == {"queue_size": 5, "wx_online": True}
    assert_pages_answer()


# --- WebSocket ----------------------------------------------------------------------------------------------
def test_one_bad_message_in_a_ws_batch_is_refused_alone_and_named_by_index():
    agent, token = make_agent()
    items = [
        message("ok-1"),
        message("nul", sender="李\x00四"),
        message("\ud800"),  # the id itself cannot be echoed: the agent goes by the index
        message("old", timestamp=YEAR_1999),
        message("future", timestamp=FAR_FUTURE_MS),
        message("long", content="长" * 5000),
        message("ok-2"),
    ]

    async def script(ws):
        await frames_until(ws, "hello")
        await ws.send_to(text_data=json.dumps({"type": "messages", "messages": items}))
        return await ws.receive_json_from()

    batch = ws_session(token, script)
    assert batch["type"] == "accepted_batch"
    assert [a["client_id"] for a in batch["accepted"]] == ["ok-1", "ok-2"]
    errors = [(e["index"], e["client_id"], e["code"]) for e in batch["errors"]]
    assert errors == [
        (1, "nul", "invalid"),
        (2, None, "invalid"),
        (3, "old", "invalid"),
        (4, "future", "invalid"),
        (5, "long", "content_too_long"),
    ]
    assert "sender" in batch["errors"][0]["detail"] and "timestamp" in batch["errors"][2]["detail"]
    assert stored_ids(agent) == {"ok-1", "ok-2"}
    assert_pages_answer()


def test_hostile_frames_get_error_frames_and_the_socket_keeps_working():
    agent, token = make_agent(queue_size=4)

    async def script(ws):
        await frames_until(ws, "hello")
        answers = []
        for raw in (
            DEEP,
            json.dumps({"type": "messages", "messages": [message("deep", extra=json.loads("[" * 40 + "]" * 40))]}),
            '{"type": "ping", "ts": NaN}',
            json.dumps({"type": "heartbeat", "queue_size": "lots"}),
            json.dumps({"type": "heartbeat", "versions": {f"k{i}": "v" * 100 for i in range(150)}}),
            json.dumps({"type": "ack", "reply_id": 1, "status": "failed", "error": "\ud800"}),
            json.dumps({"type": "takeover", "chat": "王\x00五"}),
            json.dumps({"type": "ping", "ts": "\ud800"}),  # echoed only when a number
        ):
            await ws.send_to(text_data=raw)
            answers.append(await ws.receive_json_from())
        await ws.send_json_to({"type": "messages", "messages": [message("after")]})
        answers.append(await ws.receive_json_from())
        return answers

    answers = ws_session(token, script)
    assert [(a["type"], a.get("code")) for a in answers] == [
        ("error", "too_deep"),
        ("error", "too_deep"),
        ("error", "malformed"),
        ("error", "invalid"),
        ("error", "too_large"),
        ("error", "invalid"),
        ("error", "invalid"),
        ("pong", None),
        ("accepted_batch", None),
    ]
    assert "queue_size" in answers[3]["detail"] and "chat" in answers[6]["detail"]
    assert stored_ids(agent) == {"after"}
    assert Agent.objects.get(pk=agent.pk).last_heartbeat == {"queue_size": 4}
    assert_pages_answer()


def test_a_frame_over_the_documented_limit_gets_an_error_frame_and_close_4413(settings):
    settings.WS_MAX_MESSAGE_BYTES = 10_000
    _, token = make_agent()

    async def script(ws):
        hello = (await frames_until(ws, "hello"))[-1]
        await ws.send_json_to({"type": "messages", "messages": [message("big", content="x" * 10_000)]})
        return hello, await ws.receive_json_from(), await ws.receive_output()

    hello, refused, closed = ws_session(token, script)
    assert hello["max_message_bytes"] == 10_000 and hello["max_batch"] == settings.INGEST_MAX_BATCH
    assert refused["code"] == "too_large"
    assert closed == {"type": "websocket.close", "code": 4413}


# --- readers of what agents stored ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stored",
    [
        {"queue_size": "lots"},
        {"queue_size": None, "dead_letters": [1, 2]},
        {"queue_size": 10**400},
        {"queue_size": -5, "dead_letters": True},
        ["not", "an", "object"],
        {"queue_size": 1, "blob": "x" * 3_000_000},
    ],
)
def test_bad_heartbeat_rows_from_before_validation_break_no_page(stored):
    """Rows stored before heartbeats were validated: /metrics, /dashboard/, alert evaluation and admin answer."""
    bad = AgentFactory(name="坏终端")
    Agent.objects.filter(pk=bad.pk).update(last_heartbeat=stored)
    good = AgentFactory(name="好终端", queue_size=250)
    AlertRule.objects.create(name="queue", metric=AlertRule.Metric.OFFLINE_QUEUE, threshold=100)
    staff = Client()
    staff.force_login(get_user_model().objects.create_superuser("boss", password="x-Pa55-word"))

    metrics = Client().get("/metrics")
    assert metrics.status_code == 200
    queue_sizes = {line.split('"')[1]: line.rsplit(" ", 1)[1] for line in metrics.content.decode().splitlines()
                   if line.startswith("wxcs_agent_offline_queue_size{")}  # fmt: skip
    assert queue_sizes == {bad.pk: "1.0" if stored == {"queue_size": 1, "blob": "x" * 3_000_000} else "0.0",
                           good.pk: "250.0"}  # fmt: skip
    assert staff.get("/dashboard/").status_code == 200
    assert staff.get("/dashboard/snapshot").json()["cards"]["agents"] == 2
    assert [kind for _, kind in monitoring_services.evaluate_rules()] == ["fired"]  # the good agent's 250
    listing = staff.get("/admin/agents/agent/")
    assert listing.status_code == 200 and "坏终端" in listing.content.decode()
    detail = staff.get(f"/admin/agents/agent/{bad.pk}/change/")
    assert detail.status_code == 200 and len(detail.content) < 200_000  # the blob is not rendered whole


# --- through a real Daphne: the frame limit the protocol documents is the server's ------------------------------
def test_real_daphne_refuses_oversized_frames_with_a_close_code_and_keeps_the_rest(live_env, tmp_path, settings):
    """WS_MAX_MESSAGE_BYTES (1 MiB): above it an error frame and close 4413; far above it (beyond Daphne's own
    transport limit) still close 1009, never a dropped connection; a batch under it with one bad message keeps the
    others; /metrics and /dashboard/ keep answering."""
    import asyncio

    import httpx
    import websockets

    from apps.core import aio
    from apps.core.testing import running, start_daphne

    agent, token = make_agent()
    limit = settings.WS_MAX_MESSAGE_BYTES
    daphne, base_url = start_daphne(live_env, tmp_path)
    ws_url = base_url.replace("http", "ws", 1) + "/ws/agent/"

    async def session(frame: str) -> tuple[list[dict], int | None]:
        async with websockets.connect(
            ws_url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None, open_timeout=10
        ) as ws:
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 10))]  # hello
            await ws.send(frame)
            try:
                while True:
                    frames.append(json.loads(await asyncio.wait_for(ws.recv(), 20)))
                    if frames[-1]["type"] == "accepted_batch":
                        await ws.close()  # else wait for the server to close
            except websockets.ConnectionClosed as closed:
                return frames, closed.rcvd.code if closed.rcvd else None

    def batch(*items, padding: int = 0) -> str:
        return json.dumps({"type": "messages", "messages": list(items), "padding": "x" * padding})

    with running(daphne):
        over, over_code = aio.run(session(batch(message("over"), padding=limit)), timeout=60)
        far, far_code = aio.run(session(batch(message("far"), padding=3 * limit)), timeout=60)
        fits = batch(message("keep-1"), message("bad", content="\x00"), message("keep-2"), padding=limit - 2000)
        kept, _ = aio.run(session(fits), timeout=60)
        staff = Client()
        staff.force_login(get_user_model().objects.create_superuser("boss", password="x-Pa55-word"))
        cookies = {"sessionid": staff.cookies["sessionid"].value}
        metrics = httpx.get(f"{base_url}/metrics", timeout=10)
        dashboard = httpx.get(f"{base_url}/dashboard/", cookies=cookies, timeout=10)

    assert over[0]["max_message_bytes"] == limit == 1024 * 1024
    assert [f.get("code") for f in over[1:]] == ["too_large"] and over_code == 4413
    assert far[1:] == [] and far_code == 1009  # Daphne's transport limit: closed with a close frame, not dropped
    assert kept[-1]["type"] == "accepted_batch" and [e["index"] for e in kept[-1]["errors"]] == [1]
    assert stored_ids(agent) == {"keep-1", "keep-2"}
    assert metrics.status_code == 200 and dashboard.status_code == 200 and "实时监控" in dashboard.text


def test_out_of_range_timestamps_stored_before_the_window_are_cleared_and_admin_shows_the_message():
    from datetime import UTC, datetime
    from importlib import import_module

    from django.apps import apps

    agent, token = make_agent()
    for client_id in ("far", "early", "fine"):
        assert post(token, {"message": message(client_id)}).status_code == 202
    Message.objects.filter(client_msg_id="far").update(client_timestamp=datetime(9999, 12, 31, 23, 59, tzinfo=UTC))
    Message.objects.filter(client_msg_id="early").update(client_timestamp=datetime(1, 1, 1, tzinfo=UTC))
    staff = Client(raise_request_exception=False)
    staff.force_login(get_user_model().objects.create_superuser("boss", password="x-Pa55-word"))
    far = Message.objects.get(client_msg_id="far")
    assert staff.get(f"/admin/wxmessages/message/{far.pk}/change/").status_code == 500  # what such a row did

    import_module(
        "apps.messages.migrations.0005_clear_out_of_range_client_timestamps"
    ).clear_out_of_range_client_timestamps(apps, None)
    stamps = dict(Message.objects.filter(agent=agent).values_list("client_msg_id", "client_timestamp"))
    assert stamps["far"] is None and stamps["early"] is None and stamps["fine"].year == 2025
    assert staff.get(f"/admin/wxmessages/message/{far.pk}/change/").status_code == 200
