"""Database work for async gateway code: a small dedicated thread pool (the ORM is sync), each job
returning its connection to the pool when done, so the event loop never blocks on the database and
no connection is held while LLM calls are in flight."""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import close_old_connections, connection

_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="llmgw-db")


def _job(fn: Callable, args, kwargs):
    try:
        return fn(*args, **kwargs)
    finally:
        if not connection.in_atomic_block:
            connection.close()
        close_old_connections()


async def run_db(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_executor, _job, fn, args, kwargs)
