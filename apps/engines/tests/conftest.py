import pytest
from asgiref.sync import SyncToAsync
from django.db import connections


@pytest.fixture(autouse=True)
def _close_async_orm_connections():
    """Async tests run the ORM on asgiref's single sync thread; give its connection back after each
    test so the test database can be dropped at the end."""
    yield
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


@pytest.fixture(scope="session", autouse=True)
def _close_pool_before_dropping_the_test_database(django_db_setup, django_db_blocker):
    """Worker threads (engines, gateway, knowledge) return connections to psycopg's pool, which keeps
    them open; close it so the test database can be dropped."""
    yield
    with django_db_blocker.unblock():
        for connection in connections.all():
            if hasattr(connection, "close_pool"):
                connection.close_pool()
