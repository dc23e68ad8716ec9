"""Engines for end-to-end tests and benchmarks, registered with the engine manager when this module is
imported (test workers: `celery worker --include apps.engines.testing`). Select one the normal way:
EngineSetting.active_engine = "echo", or a conversation's engine_override."""

import asyncio
import os
import time

from apps.engines.base import BaseEngine, EngineReply
from apps.engines.manager import register_engine


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


register_engine(EchoEngine.name, EchoEngine)


class ScriptedEngine(BaseEngine):
    """Answers what the test tells it to (`content`, `confidence`, `handoff`, or raises `error`), and records
    each call. Register an instance: `register_engine("scripted", lambda: engine)`."""

    name = "scripted"

    def __init__(self):
        self.content = "您好，充电桩安装请联系当地服务网点。"
        self.confidence = 0.9
        self.handoff = False
        self.error: Exception | None = None
        self.calls: list[dict] = []

    async def generate_response(self, messages, conversation_id, personality_id=None, use_tools=None, stream=None):
        self.calls.append({"messages": messages, "conversation_id": conversation_id})
        if self.error:
            raise self.error
        return EngineReply(
            content=self.content,
            confidence=self.confidence,
            engine="fake",
            model="fake-1",
            input_tokens=12,
            output_tokens=8,
            cost=0.0012,
            handoff=self.handoff,
            handoff_reason="customer asked for a person" if self.handoff else "",
            latency_ms={"retrieval": 1.5, "llm": 3.0, "total": 4.5},
        )

    async def get_engine_info(self) -> dict:
        return {"name": self.name, "description": "test engine"}

    async def health_check(self) -> dict:
        return {"ok": True, "detail": "always"}
