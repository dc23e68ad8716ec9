"""Database work from async engine code: run in a worker thread and give the connection back to the
pool afterwards (executor threads have no request cycle that would close it)."""

from collections.abc import Callable
from typing import TypeVar

from asgiref.sync import sync_to_async
from django.db import connection

T = TypeVar("T")


def _closing(function: Callable[..., T]) -> Callable[..., T]:
    def run(*args, **kwargs) -> T:
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return run


async def db(function: Callable[..., T], *args, **kwargs) -> T:
    return await sync_to_async(_closing(function), thread_sensitive=False)(*args, **kwargs)
