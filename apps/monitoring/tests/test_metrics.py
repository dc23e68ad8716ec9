import json
import time

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from apps.agents.tests.factories import AgentFactory
from apps.messages import metrics as pipeline_metrics
from apps.monitoring import metrics, services
from apps.monitoring.tests.factories import AlertRuleFactory, NotificationChannelFactory, TimedReplyFactory
from apps.monitoring.tests.live import worker_and_daphne
from apps.monitoring.tests.receiver import Receiver

pytestmark = pytest.mark.django_db


def families(text: str) -> dict:
    """Parse an exposition strictly (the parser raises on malformed text) into {name: family}."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample_value(family, **labels) -> float:
    return sum(
        sample.value
        for sample in family.samples
        if sample.name.endswith("_total") or sample.name == family.name
        if all(sample.labels.get(key) == value for key, value in labels.items())
    )


def test_metrics_exposition_is_valid_and_names_the_product_metrics(client):
    the_agent = AgentFactory(queue_size=42)
    TimedReplyFactory(agent=the_agent, status="pending_review")
    metrics.cache_hit("memory", True)
    metrics.cache_hit("memory", False)
    pipeline_metrics.observe_decision(0.4)  # the pipeline's own metrics are exposed here too

    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    found = families(response.content.decode())
    for name in [
        "django_http_requests_before_middlewares",  # django-prometheus: requests, latency, DB, cache
        "django_http_requests_latency_seconds_by_view_method",
        "django_db_execute",  # query metrics via the execute wrapper (apps.monitoring.dbmetrics)
        "django_db_query_duration_seconds",
        "wxcs_cache_requests",
        "wxcs_decision_latency_seconds",
        "wxcs_messages",
        "wxcs_replies",
        "wxcs_agents_active",
        "wxcs_agent_offline_queue_size",
        "wxcs_conversations_taken_over",
        "wxcs_cache_hit_ratio_today",
    ]:
        assert name in found, name
    assert sample_value(found["wxcs_agent_offline_queue_size"], agent=the_agent.id) == 42
    assert sample_value(found["wxcs_replies"], status="pending_review") == 1
    assert sample_value(found["wxcs_agents_active"]) == 1
    assert found["wxcs_cache_hit_ratio_today"].samples[0].value == 0.5
    assert sample_value(found["django_db_execute"], alias="default") >= 5


def test_query_errors_are_counted_by_type():
    from django.db import DatabaseError, connection

    from apps.monitoring.dbmetrics import db

    # a missing table: ProgrammingError from psycopg, OperationalError from sqlite3 (the fallback run)
    kind = "ProgrammingError" if connection.vendor == "postgresql" else "OperationalError"
    errors = db.errors_total.labels("default", connection.vendor, kind)
    before = errors._value.get()
    with pytest.raises(DatabaseError), connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table_here")
    assert errors._value.get() == before + 1


@pytest.mark.parametrize(
    ("remote", "header", "token", "status"),
    [
        ("10.1.2.3", "", "", 403),  # not loopback, no token
        ("10.1.2.3", "Bearer wrong", "s3cret", 403),
        ("10.1.2.3", "Bearer s3cret", "s3cret", 200),
        ("::1", "", "", 200),
        ("172.28.0.9", "", "", 200),  # inside an allowed network
    ],
)
def test_metrics_access_is_restricted(client, settings, remote, header, token, status):
    settings.METRICS_TOKEN = token
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1", "::1", "172.28.0.0/16"]
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get("/metrics", REMOTE_ADDR=remote, **extra)
    assert response.status_code == status
    if status == 403:
        assert b"wxcs_" not in response.content


def test_a_request_relayed_by_a_proxy_needs_the_token(client, settings):
    settings.METRICS_TOKEN = "s3cret"
    relayed = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    assert client.get("/metrics", **relayed).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret", **relayed).status_code == 200


def test_a_bad_allow_list_entry_is_skipped_not_fatal(settings):
    assert services.address_allowed("10.0.0.1", ["not-an-ip", "10.0.0.0/8"])
    assert not services.address_allowed("garbage", ["0.0.0.0/0"])


@pytest.mark.e2e
def test_metric_incremented_in_a_celery_worker_shows_on_daphne_metrics(live_env, tmp_path):
    """A notification sent by a real worker process counts there and appears on a real Daphne's /metrics."""
    from apps.core.testing import free_port

    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    env = {**live_env, "PROMETHEUS_MULTIPROC_DIR": str(prom_dir)}
    with Receiver(secret="SECtest") as receiver:
        AlertRuleFactory(channels=[NotificationChannelFactory(kind="dingtalk", target=receiver.url, secret="SECtest")])
        AgentFactory(queue_size=500)
        worker_port = free_port()
        worker_env = {**env, "METRICS_WORKER_PORT": str(worker_port), "LOG_JSON": "true"}
        with worker_and_daphne(worker_env, {**env, "LOG_JSON": "true"}, tmp_path) as (worker, daphne, base_url):
            services.evaluate_rules()  # fires: the worker's notify task sends it
            assert len(receiver.wait_for(1)) == 1, worker.log_tail()

            deadline = time.monotonic() + 20
            while True:
                found = families(httpx.get(f"{base_url}/metrics", timeout=10).text)
                sent = sample_value(found["wxcs_alert_notifications"], channel="dingtalk", outcome="sent")
                if sent == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert sent == 1, worker.log_tail()
            # Daphne's own request metrics are there too, merged from the same directory.
            assert sample_value(found["django_http_requests_total_by_method"], method="GET") >= 1
            # The worker's own exporter (docker: a worker in its own container) shows the same count.
            from_worker = families(httpx.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=10).text)
            assert sample_value(from_worker["wxcs_alert_notifications"], channel="dingtalk", outcome="sent") == 1
            # ...on loopback only (METRICS_WORKER_ADDR unset): it has no authentication.
            listening = [
                conn.laddr
                for conn in psutil.Process(worker.popen.pid).net_connections(kind="inet")
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == worker_port
            ]
            assert [address.ip for address in listening] == ["127.0.0.1"], listening
        # LOG_JSON=true: Daphne logged one JSON object per line, each with a trace_id field.
        for process in (daphne, worker):  # Celery's own logging setup adopted too (apps.adopt_celery_logger)
            logged = [json.loads(line) for line in process.log_path.read_text().splitlines() if line.startswith("{")]
            assert logged and all("trace_id" in entry and "level" in entry for entry in logged), process.name
            assert any("notify_alert_event" in entry["message"] for entry in logged) or process is daphne
        assert {path.name.split("_")[0] for path in prom_dir.iterdir()} >= {"counter"}


def test_run_platform_starts_with_an_empty_metrics_directory(settings, tmp_path):
    from apps.core.platform import all_processes

    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path / "prom")
    (tmp_path / "prom").mkdir()
    (tmp_path / "prom" / "counter_4242.db").write_bytes(b"stale")
    processes = all_processes()  # what run_platform calls before starting anything
    assert {"web", "worker", "beat"} <= set(processes)
    assert list((tmp_path / "prom").iterdir()) == []
