"""The decision queue: stored messages waiting to be decided, as a Redis list of `message:conversation[:w]`
entries, consumed by every Celery worker process that serves the `messages` queue.

Why not one Celery task per message: on these machines Celery costs ≈ 1.3 ms of CPU to publish a task and
≈ 1.6 ms to receive and run even an empty one (bench/README.md, issue 14) — alone most of the 4 ms a
message may cost the server. Here a message costs one RPUSH (shared by the requests of one event-loop turn)
and a share of one BLPOP / LPOP. Redis hands the entries out across the worker processes blocked on the list.

Nothing is lost when a worker dies or Redis is away: the database is the record (a message is `received`
until decided). Entries a web process could not push (Redis away) are held in its memory and pushed again
every second until Redis answers (`hold`), so they are decided within seconds of Redis's return; beat's
`sweep_stuck` puts anything else left undecided back on the list (a web process that died holding entries, a
Redis restarted without its data). Decisions that fail on a transient error continue as the Celery task
`process_message` (retry with backoff).
"""

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from django.conf import settings

from apps.core import aio, redis

logger = logging.getLogger("wxcs.pipeline")


def pending_key() -> str:
    return redis.key("pipeline", "pending")


@dataclass(frozen=True)
class Entry:
    message_id: int
    conversation_id: int
    announce: bool = False  # someone waits for this decision (`?wait=N`)

    def encode(self) -> str:
        return f"{self.message_id}:{self.conversation_id}" + (":w" if self.announce else "")

    @classmethod
    def decode(cls, raw: str) -> "Entry":
        message_id, conversation_id, *flags = raw.split(":")
        return cls(int(message_id), int(conversation_id), "w" in flags)


async def enqueue(entries: list[Entry]) -> None:
    if entries:
        await redis.batched("RPUSH", pending_key(), *(entry.encode() for entry in entries))


# --- entries whose push failed, pushed again by this process once Redis answers --------------------------
HOLD_RETRY_SECONDS = 1.0
HOLD_MAX = 100_000  # beyond that the oldest are forgotten here; beat's sweep queues them from the database
_held: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Entry]]" = weakref.WeakKeyDictionary()
_pushers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = weakref.WeakKeyDictionary()


def hold(entries: list[Entry]) -> None:
    """Push `entries` later (their push failed): every HOLD_RETRY_SECONDS until Redis takes them."""
    if not entries:
        return
    loop = asyncio.get_running_loop()
    held = _held.setdefault(loop, [])
    held.extend(entries)
    del held[:-HOLD_MAX]
    pusher = _pushers.get(loop)
    if pusher is None or pusher.done():
        _pushers[loop] = loop.create_task(_push_held(loop))


async def _push_held(loop: asyncio.AbstractEventLoop) -> None:
    while _held.get(loop):
        await asyncio.sleep(HOLD_RETRY_SECONDS)
        entries = _held.pop(loop, [])
        try:
            async with asyncio.timeout(settings.REDIS_OPTIONAL_TIMEOUT):
                await enqueue(entries)
        except Exception:  # Redis still away: keep them, oldest first
            _held.setdefault(loop, [])[:0] = entries
            del _held[loop][:-HOLD_MAX]
        else:
            logger.warning("queued %d messages held back while Redis was unavailable", len(entries))


class Consumer:
    """Pops entries and runs `handle(entry)` for each, at most `concurrency` at a time, on this event loop."""

    def __init__(self, handle: Callable[[Entry], Awaitable[None]], concurrency: int):
        self.handle = handle
        self.concurrency = concurrency
        self.slots = asyncio.Semaphore(concurrency)
        self.running: set[asyncio.Task] = set()
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        while not self.stopping.is_set():
            try:
                entries = await self._next()
            except Exception:  # Redis away: try again shortly; the sweep covers what was pushed meanwhile
                logger.warning("decision queue unavailable", exc_info=True)
                await asyncio.sleep(1)
                continue
            for raw in entries:
                try:
                    entry = Entry.decode(raw)
                except ValueError:  # not ours: dropping it loses nothing (the database is the record)
                    logger.error("malformed decision-queue entry %r dropped", raw)
                    continue
                await self._start(entry)

    async def _next(self) -> list[str]:
        """Wait (≤ 1 s) for an entry, then take whatever else is waiting, up to the free slots."""
        async with self.slots:  # only wait for work while there is room for it
            popped = await redis.aclient().blpop([pending_key()], timeout=1)
        if popped is None:
            return []
        more = min(self.concurrency - len(self.running), settings.PIPELINE_POP_BATCH) - 1
        rest = await redis.aclient().lpop(pending_key(), more) if more > 0 else None
        return [popped[1], *(rest or [])]

    async def _start(self, entry: Entry) -> None:
        await self.slots.acquire()
        task = asyncio.get_running_loop().create_task(self._run_one(entry))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _run_one(self, entry: Entry) -> None:
        try:
            await self.handle(entry)
        except Exception:
            logger.exception("message %s: unexpected error in the decision queue", entry.message_id)
        finally:
            self.slots.release()

    async def stop(self, grace: float) -> None:
        """Take no more entries; let the running decisions finish for up to `grace` seconds."""
        self.stopping.set()
        if self.running:
            await asyncio.wait(set(self.running), timeout=grace)


# --- one consumer per worker process (started when a Celery worker that serves `messages` is ready) -----
_consumer: Consumer | None = None


def start(handle: Callable[[Entry], Awaitable[None]]) -> None:
    global _consumer
    loop = aio.background_loop()
    _consumer = Consumer(handle, settings.PIPELINE_CONCURRENCY)
    asyncio.run_coroutine_threadsafe(_consumer.run(), loop)
    logger.info("decision queue consumer started (%d at a time)", settings.PIPELINE_CONCURRENCY)


def stop(grace: float = 10.0) -> None:
    if _consumer is not None:
        aio.run(_consumer.stop(grace), timeout=grace + 1)
