"""The agents app's part of seed_demo: one demo agent whose credentials the simulator reads from
var/demo_agent.json (mode 0600). Printed once, when created (or re-keyed because the file is gone)."""

import json
import os

from django.conf import settings

from apps.agents.models import Agent
from apps.agents.services import create_agent, rotate_secret

DEMO_AGENT_ID = "agt_demo"


def credentials_file():
    return settings.VAR_DIR / "demo_agent.json"


def _write(agent_id: str, secret: str) -> None:
    base = f"http://{settings.WEB_HOST}:{settings.WEB_PORT}"
    data = {
        "agent_id": agent_id,
        "api_key": secret,
        "server_url": base,
        "ws_url": base.replace("http://", "ws://") + "/ws/agent/",
    }
    path = credentials_file()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=2)
    os.chmod(path, 0o600)


def seed(stdout) -> None:
    agent = Agent.objects.filter(pk=DEMO_AGENT_ID).first()
    path = credentials_file()
    if agent is not None and path.exists():
        stdout.write(f"demo agent '{DEMO_AGENT_ID}' exists (credentials in {path})")
        return
    if agent is None:
        agent, secret = create_agent("演示终端", agent_id=DEMO_AGENT_ID, driver="simulator")
    else:  # the file is gone: the old secret cannot be recovered, issue a new one
        secret = rotate_secret(agent)
    _write(agent.id, secret)
    stdout.write(f"demo agent created — agent_id: {agent.id}  api_key: {secret}  (saved to {path})")
