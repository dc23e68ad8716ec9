"""One long-lived asyncio loop per process, on its own thread, for sync callers (Celery tasks in a
thread pool, management commands) that need async I/O (LLM calls, HTTP).

Every caller shares the loop, so async clients and their connection pools are reused, and hundreds
of calls can be in flight while each calling thread just waits on a future (no CPU, no GIL).
"""

import asyncio
import atexit
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
logger = logging.getLogger(__name__)

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed() or _thread is None or not _thread.is_alive():
            _loop = asyncio.new_event_loop()
            _thread = threading.Thread(target=_loop.run_forever, name="wxcs-aio", daemon=True)
            _thread.start()
        return _loop


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run `coro` on the shared loop and wait for it from this (non-async) thread."""
    loop = background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("aio.run() called from the background loop itself; await the coroutine instead")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except TimeoutError:
        future.cancel()
        raise


def _shutdown() -> None:
    if _loop is not None and _loop.is_running():
        _loop.call_soon_threadsafe(_loop.stop)


atexit.register(_shutdown)


_background: set[asyncio.Task] = set()


def spawn(coro: Coroutine[Any, Any, Any], *, what: str = "background task") -> asyncio.Task:
    """Run `coro` in the background on the running loop (work off a request's or a reply's path): the task
    is kept until it ends (the loop holds only weak references) and a failure is logged, never lost."""
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)

    def done(finished: asyncio.Task) -> None:
        _background.discard(finished)
        if not finished.cancelled() and finished.exception() is not None:
            logger.error("%s failed", what, exc_info=finished.exception())

    task.add_done_callback(done)
    return task


async def drain() -> None:
    """Wait for the running loop's background tasks (process shutdown, tests)."""
    loop = asyncio.get_running_loop()
    pending = [task for task in _background if task.get_loop() is loop]
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
