"""Shared fixtures. Live-process fixtures need PostgreSQL + Redis (always there in CI)."""

import pytest
from asgiref.sync import SyncToAsync
from django.conf import settings
from django.core.cache import cache
from django.db import connections


def services_available() -> bool:
    return bool(settings.REDIS_URL) and settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


requires_services = pytest.mark.skipif(
    not services_available(), reason="needs PostgreSQL and Redis (CI sets REQUIRE_SERVICES=1 and always has them)"
)


@pytest.fixture(scope="session")
def _release_the_test_database(django_db_setup, django_db_blocker):
    """The shared event loop's psycopg pool and executor threads (run_db's, asgiref's) keep connections to the
    test database: end them before it is dropped (set up after the database, so torn down before it)."""
    yield
    from apps.core import aio, db

    aio.run(db.close_loop_pool(), timeout=10)
    with django_db_blocker.unblock():
        connection = connections["default"]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


@pytest.fixture(autouse=True)
def _test_database_released_at_the_end(request):
    if request.node.get_closest_marker("django_db") or "transactional_db" in request.fixturenames:
        request.getfixturevalue("_release_the_test_database")


@pytest.fixture(autouse=True)
def _close_async_orm_connections():
    """Async tests run the ORM on asgiref's single sync thread: give its connection back after each test."""
    yield
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


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
