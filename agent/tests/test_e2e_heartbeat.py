"""The real agent process against a real Daphne (PostgreSQL, Redis): it beats at the interval set in admin, not at
its own `heartbeat_s`, and the agent stopping (cleanly, or killed with -9) shows it offline within 5 s."""

import time

import pytest
import yaml

from agent.tests.test_e2e_agent import AgentProcess, wait_for
from conftest import requires_services

pytestmark = [pytest.mark.e2e, requires_services]


def test_the_agent_beats_at_the_admins_interval_and_is_offline_within_5_s_of_stopping(live_env, tmp_path):
    from apps.agents import services
    from apps.agents.models import Agent
    from apps.core.testing import start_daphne

    daphne, base_url = start_daphne(live_env, tmp_path)
    agent, secret = services.create_agent("心跳终端")
    agent.heartbeat_interval = 1  # as a supervisor sets it in admin
    services.save_agent(agent)
    process = AgentProcess(tmp_path, base_url, agent.id, secret)
    config = yaml.safe_load(process.config.read_text(encoding="utf-8"))
    process.config.write_text(yaml.safe_dump({**config, "heartbeat_s": 60}, allow_unicode=True), encoding="utf-8")

    def beats_for(seconds: float) -> set:
        seen, deadline = set(), time.monotonic() + seconds
        while time.monotonic() < deadline:
            seen.add(Agent.objects.get(pk=agent.id).last_heartbeat_at)
            time.sleep(0.1)
        return seen - {None}

    def offline_within() -> float:
        started = time.monotonic()
        wait_for(lambda: Agent.objects.get(pk=agent.id).presence == "offline", 10, 0.05, "offline")
        return time.monotonic() - started

    try:
        process.start()
        wait_for(lambda: Agent.objects.get(pk=agent.id).presence == "online", 30, what="online")
        assert len(beats_for(4.5)) >= 3, process.log_text()  # every second (60 s by its own file)
        process.stop()  # SIGTERM: the agent closes its socket
        assert offline_within() < 5

        process.start()
        wait_for(lambda: Agent.objects.get(pk=agent.id).presence == "online", 30, what="online again")
        process.kill9()  # the OS closes the TCP connection: Daphne sees the disconnect
        assert offline_within() < 5
    finally:
        process.stop()
        daphne.stop()
