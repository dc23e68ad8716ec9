"""Helpers for end-to-end tests and benchmarks of the pipeline (real Daphne + Celery worker)."""

import asyncio
import json
import time


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/ws/agent/"


async def ws_connect(base_url: str, token: str | None = None, **kwargs):
    import websockets

    headers = {"Authorization": f"Bearer {token}"} if token else None
    return await websockets.connect(ws_url(base_url), additional_headers=headers, max_size=2**22, **kwargs)


async def recv_until(ws, predicate, within: float = 20.0) -> dict:
    """Frames until one matches `predicate` (within `within` seconds); returns it (others are dropped)."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no matching frame")
        frame = json.loads(await asyncio.wait_for(ws.recv(), remaining))
        if predicate(frame):
            return frame


async def collect(ws, seconds: float) -> list[dict]:
    frames = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), remaining)))
        except TimeoutError:
            break
    return frames
