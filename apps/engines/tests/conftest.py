import pytest
from asgiref.sync import SyncToAsync
from django.db import connections


@pytest.fixture(autouse=True)
def _close_async_orm_connections():
    """Async tests run the ORM on asgiref's single sync thread; give its connection back after each
    test so the test database can be dropped at the end."""
    yield
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)
