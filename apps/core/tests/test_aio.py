import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from apps.core import aio


def test_many_threads_share_one_loop_and_wait_concurrently():
    async def sleepy(i):
        await asyncio.sleep(0.2)
        return i, id(asyncio.get_running_loop())

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(lambda i: aio.run(sleepy(i)), range(200)))
    elapsed = time.perf_counter() - started
    assert [i for i, _ in results] == list(range(200))
    assert len({loop for _, loop in results}) == 1
    assert elapsed < 1.5  # 200 × 0.2 s serially would be 40 s


def test_timeout_cancels_the_coroutine():
    cancelled = threading.Event()

    async def forever():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        aio.run(forever(), timeout=0.1)
    assert cancelled.wait(2)


def test_exceptions_propagate():
    async def boom():
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        aio.run(boom())
