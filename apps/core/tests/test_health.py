"""/healthz and /readyz."""

import httpx
import pytest

from apps.core.testing import Process, free_port, running, start_daphne
from conftest import requires_services


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@requires_services
@pytest.mark.django_db
def test_readyz_ok_when_every_dependency_answers(async_client):
    pass


@requires_services
@pytest.mark.django_db(transaction=True)
def test_readyz_turns_503_naming_redis_when_it_is_unreachable(live_env, tmp_path):
    """A real Daphne on its own Redis; kill that Redis and /readyz must say what failed."""
    port = free_port()
    redis = Process(
        "redis",
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        live_env,
        tmp_path,
    )
    env = dict(live_env, REDIS_URL=f"redis://127.0.0.1:{port}/0")
    with running(redis):
        daphne, base_url = start_daphne(env, tmp_path)
        with running(daphne):
            ready = httpx.get(f"{base_url}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
            assert ready.json()["failed"] == []
            redis.kill()
            down = httpx.get(f"{base_url}/readyz", timeout=10)
    assert down.status_code == 503
    body = down.json()
    assert body["status"] == "unavailable"
    assert set(body["failed"]) == {"cache", "channel_layer", "broker"}
    assert body["checks"]["database"]["ok"] is True
    assert "Connection" in body["checks"]["cache"]["error"]
