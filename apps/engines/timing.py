"""Latency breakdown shared by every engine, so each EngineReply reports the same stages."""

import time
from contextlib import contextmanager

STAGES = ("memory", "retrieval", "customer", "llm", "tools", "total")


class Stopwatch:
    def __init__(self):
        self._started = time.perf_counter()
        self.stages: dict[str, float] = dict.fromkeys(STAGES[:-1], 0.0)

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + (time.perf_counter() - started) * 1000

    def breakdown(self) -> dict[str, float]:
        result = {name: round(value, 2) for name, value in self.stages.items()}
        result["total"] = round((time.perf_counter() - self._started) * 1000, 2)
        return result
