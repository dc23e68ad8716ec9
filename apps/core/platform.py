"""Pieces of `manage.py run_platform`: the embedded Redis and the process list.

An app may add long-running processes (a simulator, say) by shipping `apps/<app>/platform.py` with
`processes() -> dict[str, str]` (name → shell command); this module is core's own contribution.
"""

import shlex
import subprocess
import sys

from django.conf import settings

from apps.core import embedded_redis, webserver
from apps.core.discovery import app_modules


def start_embedded_redis() -> subprocess.Popen:
    return embedded_redis.start(settings.EMBEDDED_REDIS_SOCKET, settings.VAR_DIR / "redis")


def processes() -> dict[str, str]:
    python = shlex.quote(sys.executable)
    celery = f"{python} -m celery -A celery_app"
    worker = (
        f"{celery} worker -Q default,messages,sync -P {settings.CELERY_WORKER_POOL}"
        f" -c {settings.CELERY_WORKER_CONCURRENCY} --loglevel INFO"
    )
    count = max(1, settings.CELERY_WORKER_PROCESSES)
    workers = (
        {"worker": worker}
        if count == 1
        else {f"worker{i}": f"{worker} -n worker{i}@%h" for i in range(1, count + 1)}  # node names must differ
    )
    return {
        "web": shlex.join(webserver.argv(settings.WEB_HOST, settings.WEB_PORT)),
        **workers,
        "beat": f"{celery} beat --loglevel INFO",
    }


def all_processes() -> dict[str, str]:
    return {name: command for module in app_modules("platform") for name, command in module.processes().items()}
