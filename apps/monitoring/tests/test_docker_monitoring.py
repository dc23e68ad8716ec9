import json
import re

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from apps.core.discovery import app_modules
from apps.core.testing import BASE_DIR
from apps.monitoring.metrics import exposition_registry

DOCKER = BASE_DIR / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "wxcs-overview.json"


def test_compose_runs_prometheus_and_grafana_with_provisioning():
    spec = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    services = spec["services"]
    assert {"prometheus", "grafana"} <= set(services)
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in services["grafana"]["volumes"]
    app_env = spec["x-app"]["environment"]
    assert app_env["PROMETHEUS_MULTIPROC_DIR"] in spec["x-app"]["tmpfs"]
    # The only non-loopback address allowed to read /metrics is Prometheus's own fixed one.
    prometheus_ip = services["prometheus"]["networks"]["default"]["ipv4_address"]
    assert app_env["METRICS_ALLOWED_IPS"] == f"127.0.0.1,::1,{prometheus_ip}"


def test_prometheus_scrapes_web_and_worker():
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {"wxcs-web": ["web:8000"], "wxcs-worker": ["worker:9808"]}


def test_grafana_dashboard_has_the_panels_and_only_real_metric_names(client):
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " ".join(panel["title"] for panel in dashboard["panels"])
    for needed in ["请求速率", "P95", "今日 LLM 成本", "缓存命中率", "在线客服终端", "错误", "预算使用"]:
        assert needed in titles, needed
    datasource = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {datasource["datasources"][0]["uid"]}

    assert app_modules("metrics")  # every app's metrics registered, as in a running process
    client.get("/healthz")  # django-prometheus registers its request metrics with the middleware
    exposed = {
        family.name for family in text_string_to_metric_families(generate_latest(exposition_registry()).decode())
    }
    used = {
        re.sub(r"_(bucket|total|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(?:django|wxcs)_[a-z0-9_]+", target["expr"])
    }
    assert used and used <= exposed, used - exposed


@pytest.fixture(autouse=True)
def _db(db):
    """The exposition includes database readings."""
