"""Agent test helpers. Unit tests here need no database; the e2e tests (test_e2e_*.py) use the
project's live-server fixtures."""

import asyncio
import contextlib

import pytest

from agent.config import parse
from agent.drivers.simulator import SimulatorDriver
from agent.runtime import AgentRuntime
from agent.tests.fakeserver import AGENT_ID, SECRET, FakeServer

IMMEDIATE = {
    "min_gap_s": 0,
    "typing_s_per_char": 0,
    "max_typing_s": 0,
    "jitter_s": 0,
    "per_minute_cap": 0,
    "daily_cap": 0,
}


def agent_config(tmp_path, url, **sections):
    data = {
        "server": {"url": url, "agent_id": AGENT_ID, "secret": SECRET, "timeout_s": 3},
        "driver": {"name": "simulator"},
        "pacing": IMMEDIATE,
        "state_dir": str(tmp_path / "state"),
        "heartbeat_s": 1,
        "poll_interval_s": 0.02,
        "reconnect": {"initial_s": 0.05, "max_s": 0.3},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse(data)


async def wait_for(predicate, timeout=10.0, interval=0.02):  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


@pytest.fixture
async def server():
    fake = await FakeServer().start()
    yield fake
    await fake.stop()


@contextlib.asynccontextmanager
async def running_agent(config, driver=None):
    driver = driver or SimulatorDriver(pacing=None)
    runtime = AgentRuntime(config, driver)
    task = asyncio.create_task(runtime.run())
    try:
        yield runtime, driver
    finally:
        runtime.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


@pytest.fixture
def live_env(live_env):
    """The root fixture's child environment with a deterministic engine (the echo engine that test workers
    register, apps.engines.testing: "收到：<text>", confidence 0.9) and no ingest throttle, for the agent's
    e2e tests."""
    live_env.update(
        ENGINE_DEFAULT="echo",
        ECHO_ENGINE_DELAY="0",
        PIPELINE_CLAIM_TTL="5",
        CELERY_VISIBILITY_TIMEOUT="3",
        INGEST_RATE_LIMIT="0",
    )
    return live_env
