"""ORM work from async code (consumers, async views, coroutines on the shared loop).

Executor threads have no request cycle that would hand their database connection back to the pool,
so a plain `sync_to_async` leaks one pooled connection per thread that ever touched the database
(and for good when the thread dies with its event loop). `run_db` closes it after every call.
"""

from collections.abc import Callable
from typing import Any, TypeVar

from channels.db import database_sync_to_async

T = TypeVar("T")


async def run_db(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await database_sync_to_async(function, thread_sensitive=False)(*args, **kwargs)
