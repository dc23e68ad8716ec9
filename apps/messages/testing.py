"""Helpers for end-to-end tests and benchmarks of the pipeline (real Daphne + Celery worker)."""

import asyncio
import json
import os
import time

from apps.engines.base import BaseEngine, EngineReply


class EchoEngine(BaseEngine):
    """A deterministic engine for e2e tests and benchmarks: answers at once (or after
    ECHO_ENGINE_DELAY seconds, awaited — no thread blocked) with confidence ECHO_ENGINE_CONFIDENCE."""

    name = "echo"

    async def generate_response(self, messages, conversation_id, personality_id=None, use_tools=None, stream=None):
        started = time.perf_counter()
        delay = float(os.environ.get("ECHO_ENGINE_DELAY", "0") or 0)
        if delay:
            await asyncio.sleep(delay)
        text = messages[-1]["content"] if messages else ""
        llm_ms = (time.perf_counter() - started) * 1000
        return EngineReply(
            content=f"收到：{text}",
            confidence=float(os.environ.get("ECHO_ENGINE_CONFIDENCE", "0.9")),
            engine=self.name,
            model="echo",
            latency_ms={"retrieval": 0.0, "llm": llm_ms, "total": llm_ms},
            offline=True,
        )

    async def get_engine_info(self) -> dict:
        return {"name": self.name, "description": "test engine"}

    async def health_check(self) -> dict:
        return {"ok": True, "detail": "always"}


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
