import pytest

from apps.engines.base import EngineReply
from apps.messages import services


class FakeEngine:
    """In-process stand-in for the active engine (unit tests only; e2e tests use the real offline engine)."""

    name = "fake"

    def __init__(self):
        self.content = "您好，充电桩安装请联系当地服务网点。"
        self.confidence = 0.9
        self.handoff = False
        self.calls: list[dict] = []
        self.error: Exception | None = None

    async def generate_response(self, messages, conversation_id, personality_id=None, use_tools=None, stream=None):
        self.calls.append({"messages": messages, "conversation_id": conversation_id})
        if self.error:
            raise self.error
        return EngineReply(
            content=self.content,
            confidence=self.confidence,
            engine=self.name,
            model="fake-1",
            input_tokens=12,
            output_tokens=8,
            cost=0.0012,
            handoff=self.handoff,
            latency_ms={"retrieval": 1.5, "llm": 3.0, "total": 4.5},
        )


@pytest.fixture(autouse=True)
def fake_engine(monkeypatch):
    engine = FakeEngine()

    async def resolve(conversation_id, personality_id, override):
        return engine

    monkeypatch.setattr(services, "resolve_engine", resolve)
    return engine


@pytest.fixture
def live_env(live_env):
    """The root fixture's child environment plus the pipeline's test knobs."""
    live_env.update(
        PIPELINE_ENGINE_CLASS="apps.messages.testing.EchoEngine",
        ECHO_ENGINE_DELAY="0",
        PIPELINE_LOCK_TTL="5",
        CELERY_VISIBILITY_TIMEOUT="3",
        INGEST_RATE_LIMIT="0",
    )
    return live_env
