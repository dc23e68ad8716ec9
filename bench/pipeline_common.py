"""Shared set-up of the pipeline benchmarks (bench/ingest_*.py, bench/pipeline_*.py).

Real processes on this machine: N Daphne web processes (clients spread over them, as an nginx
upstream would), optionally one Celery worker (threads), PostgreSQL and Redis. The database is
`wxcs_bench_pipeline` (created and migrated on first use) unless DATABASE_URL is set; Redis db 1
unless REDIS_URL is set. Agents are created fresh for each run.
"""

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wxcs.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/wxcs_bench_pipeline")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/1")


def _ensure_database() -> None:
    from urllib.parse import urlparse

    url = urlparse(os.environ["DATABASE_URL"])
    name = url.path.lstrip("/")
    query = f"SELECT 1 FROM pg_database WHERE datname='{name}'"  # noqa: S608 - our own setting
    exists = subprocess.run(
        ["psql", "-h", url.hostname or "127.0.0.1", "-U", url.username or "postgres", "-tAc", query],
        capture_output=True,
        text=True,
    )
    if exists.stdout.strip() != "1":
        subprocess.run(
            ["createdb", "-h", url.hostname or "127.0.0.1", "-U", url.username or "postgres", name], check=True
        )


_ensure_database()

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from apps.agents.auth import issue_tokens  # noqa: E402
from apps.agents.services import create_agent  # noqa: E402
from apps.core.testing import Process, child_environment, start_daphne, start_worker  # noqa: E402

LOG_DIR = Path(tempfile.mkdtemp(prefix="wxcs-bench-pipeline-"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def prepare(**env_overrides: str) -> dict:
    call_command("migrate", verbosity=0)
    from django_redis import get_redis_connection

    get_redis_connection("default").flushdb()
    # The fragment debounce is a deliberate wait before each reply, not overhead: off unless a bench sets it.
    env_overrides = {"PIPELINE_DEBOUNCE_MS": "0", **env_overrides}
    env = child_environment(INGEST_RATE_LIMIT="100000000", LOG_LEVEL="WARNING", **env_overrides)
    return env


def drop_decision_queue() -> None:
    """No worker ran: what ingest queued for a decision goes."""
    from apps.core import redis
    from apps.messages import queue

    redis.client().delete(queue.pending_key())


def agents(n: int) -> list[tuple[str, str]]:
    stamp = int(time.time() * 1000)
    result = []
    for i in range(n):
        agent, _ = create_agent(f"bench-{stamp}-{i}", agent_id=f"agt_b{stamp}_{i}")
        result.append((agent.id, issue_tokens(agent.id)["access_token"]))
    return result


def start_web(env: dict, n: int) -> tuple[list[Process], list[str]]:
    processes, urls = [], []
    for i in range(n):
        process, url = start_daphne(env, LOG_DIR, name=f"daphne{i}")
        processes.append(process)
        urls.append(url)
    return processes, urls


def start_celery(env: dict, concurrency: int = 64) -> Process:
    return start_worker(env, LOG_DIR, name="worker", concurrency=concurrency, queues="messages,default")


def stop(*processes: Process) -> None:
    for process in processes:
        process.stop()


def cpu_seconds(processes: list[Process]) -> float:
    import psutil

    total = 0.0
    for process in processes:
        try:
            times = psutil.Process(process.popen.pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def message(client_id: str, i: int, chat: str | None = None) -> dict:
    return {
        "id": client_id,
        "chat_name": chat or f"客户{i % 500}",
        "chat_type": "private",
        "sender": f"客户{i % 500}",
        "content": f"你好，我的充电桩订单{i}什么时候发货？",
        "type": "text",
        "timestamp": time.time(),
    }


def run(coro):
    return asyncio.run(coro)
