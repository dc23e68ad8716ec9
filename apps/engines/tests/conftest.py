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
    """Executor threads (ours, the gateway's, the knowledge base's) leave pooled connections open;
    end them so the test database is dropped at once instead of after Django's retries."""
    yield
    with django_db_blocker.unblock():
        connection = connections["default"]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


@pytest.fixture
def no_live_erp(monkeypatch):
    """contract_detail adds live product lines from the ERP; engine tests use the synced rows only."""
    from apps.erp import client as erp_client

    def unreachable(cls):
        raise erp_client.ErpError("ERP 未配置（测试）")

    monkeypatch.setattr(erp_client.ErpClient, "from_settings", classmethod(unreachable))
