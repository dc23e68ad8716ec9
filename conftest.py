"""Shared fixtures. Live-process fixtures need PostgreSQL + Redis (always there in CI)."""

import pytest
from django.conf import settings
from django.core.cache import cache


def services_available() -> bool:
    return bool(settings.REDIS_URL) and settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


requires_services = pytest.mark.skipif(
    not services_available(), reason="needs PostgreSQL and Redis (CI sets REQUIRE_SERVICES=1 and always has them)"
)


@pytest.fixture(autouse=True)
def _clean_cache():
    """Every test starts with an empty cache (and, on Redis, an empty Redis database)."""
    cache.clear()
    yield


@pytest.fixture
def live_env(transactional_db):
    """Environment for child processes bound to this test's database and Redis."""
    if not services_available():
        pytest.skip("live processes need PostgreSQL and Redis")
    from apps.core.testing import child_environment

    return child_environment()


@pytest.fixture
def live_server_stack(live_env, tmp_path):
    """A real Daphne and a real Celery worker; yields (base_url, {name: Process})."""
    from apps.core.testing import running, start_daphne, start_worker

    worker = start_worker(live_env, tmp_path)
    try:
        daphne, base_url = start_daphne(live_env, tmp_path)
    except Exception:
        worker.stop()
        raise
    with running(daphne, worker):
        yield base_url, {"daphne": daphne, "worker": worker}
