import pytest

from apps.engines import manager
from apps.engines.testing import ScriptedEngine


@pytest.fixture
def fake_engine(settings):
    """A ScriptedEngine registered with the engine manager and made the default engine."""
    engine = ScriptedEngine()
    manager.register_engine("scripted", lambda: engine)
    settings.ENGINE_DEFAULT = "scripted"
    manager.SWITCH.forget()
    yield engine
    manager.SWITCH.forget()


@pytest.fixture
def live_env(live_env):
    """The root fixture's child environment: the echo engine (apps.engines.testing, loaded by test workers)
    answers, quick lock expiry, no throttle."""
    live_env.update(
        ENGINE_DEFAULT="echo",
        ECHO_ENGINE_DELAY="0",
        PIPELINE_CLAIM_TTL="5",
        PIPELINE_SWEEP_AFTER="2",
        CELERY_VISIBILITY_TIMEOUT="3",
        INGEST_RATE_LIMIT="0",
    )
    return live_env
