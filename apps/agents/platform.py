"""`make run` shows the whole loop: a simulator agent (scripted customers) logs in as the demo agent."""

import shlex
import sys

from django.conf import settings


def processes() -> dict[str, str]:
    if not settings.RUN_DEMO_AGENT:
        return {}
    python = shlex.quote(sys.executable)
    return {"agent-sim": f"{python} -m agent --simulate --server http://{settings.WEB_HOST}:{settings.WEB_PORT}"}
