"""Dashboard producer CPU: one real Daphne, 0 / 1 / 50 staff viewers on /ws/dashboard/.

    .venv/bin/python bench/dashboard_producer.py [--seconds 30] [--viewers 50] [--rows 5000]

Uses DATABASE_URL (default postgres://postgres@127.0.0.1:5432/wxcs_monitoring, created and migrated if
missing) and REDIS_URL (default redis://127.0.0.1:6379/7). Seeds agents and messages with replies so the
snapshot's queries have real rows to read, then measures the Daphne process's CPU (psutil, user+system)
over the window for each viewer count, the snapshots each viewer received, and the time to build one
snapshot in-process. The viewers run in this process (their CPU is not counted).
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/wxcs_monitoring")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/7")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wxcs.settings")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wxcs-bench-prom-")


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


ensure_database(os.environ["DATABASE_URL"])

import django  # noqa: E402

django.setup()

import psutil  # noqa: E402
import websockets  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from apps.core.testing import child_environment, start_daphne  # noqa: E402
from apps.monitoring import services  # noqa: E402


def seed(rows_wanted: int) -> str:
    from datetime import timedelta
    from decimal import Decimal

    from django.contrib.auth.models import Permission
    from django.utils import timezone

    from apps.agents.models import Agent
    from apps.messages.models import Conversation, Message, Reply

    user, _ = get_user_model().objects.get_or_create(username="bench_ops", defaults={"is_staff": True})
    user.user_permissions.add(Permission.objects.get(content_type__app_label="monitoring", codename="view_dashboard"))
    client = Client()
    client.force_login(user)
    have = Reply.objects.filter(agent__id__startswith="agt_bench").count()
    if have < rows_wanted:
        now = timezone.now()
        agents = [
            Agent.objects.update_or_create(
                id=f"agt_bench{i}",
                defaults={
                    "name": f"bench {i}",
                    "secret_hash": "!",
                    "last_seen": now,
                    "reported_presence": "online",
                    "last_heartbeat": {"queue_size": i},
                },
            )[0]
            for i in range(5)
        ]
        conversations = [
            Conversation.objects.get_or_create(agent=a, chat_name=f"客户{j}")[0] for a in agents for j in range(20)
        ]
        messages = [
            Message(
                agent_id=conversations[i % 100].agent_id,
                conversation=conversations[i % 100],
                client_msg_id=f"bench-{have + i}",
                sender="客户",
                content="你好，订单什么时候发货？",
                received_at=now - timedelta(seconds=(rows_wanted - i) * 0.6),
                status="decided",
            )
            for i in range(rows_wanted - have)
        ]
        Message.objects.bulk_create(messages, batch_size=1000)
        Reply.objects.bulk_create(
            [
                Reply(
                    message=m,
                    conversation=m.conversation,
                    agent_id=m.agent_id,
                    content="明天发货",
                    status="delivered",
                    cost=Decimal("0.0012"),
                    created_at=m.received_at + timedelta(milliseconds=300 + (i % 50) * 20),
                )
                for i, m in enumerate(messages)
            ],
            batch_size=1000,
        )
    return f"sessionid={client.cookies['sessionid'].value}"


async def watch(url: str, cookie: str, viewers: int, seconds: float, process: psutil.Process) -> dict:
    received = [0] * viewers
    ready = asyncio.Event()
    stop = asyncio.Event()

    async def viewer(i: int):
        async with websockets.connect(
            url, additional_headers={"Cookie": cookie, "Origin": "http://127.0.0.1"}, max_size=None
        ) as ws:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                if ready.is_set():
                    received[i] += 1

    tasks = [asyncio.create_task(viewer(i)) for i in range(viewers)]
    await asyncio.sleep(3)  # connect, producer elected, warm-up
    ready.set()
    before, started = process.cpu_times(), time.monotonic()
    await asyncio.sleep(seconds)
    after, elapsed = process.cpu_times(), time.monotonic() - started
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu = (after.user - before.user) + (after.system - before.system)
    return {
        "viewers": viewers,
        "cpu_percent": 100 * cpu / elapsed,
        "snapshots_per_viewer_per_s": (sum(received) / viewers / elapsed) if viewers else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args()

    call_command("migrate", interactive=False, verbosity=0)
    cookie = seed(args.rows)
    builds, cpu = [], []
    for _ in range(20):
        started, started_cpu = time.perf_counter(), time.process_time()
        json.dumps(services.dashboard_snapshot(), default=str)
        builds.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    builds.sort()
    cpu.sort()

    log_dir = Path(tempfile.mkdtemp(prefix="wxcs-bench-"))
    daphne, base_url = start_daphne(
        child_environment(PROMETHEUS_MULTIPROC_DIR=os.environ["PROMETHEUS_MULTIPROC_DIR"]), log_dir
    )
    try:
        process = psutil.Process(daphne.popen.pid)
        url = base_url.replace("http", "ws") + "/ws/dashboard/"
        results = [asyncio.run(watch(url, cookie, n, args.seconds, process)) for n in (0, 1, args.viewers)]
    finally:
        daphne.stop()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(
        f"snapshot build (in-process, {args.rows} replies): median {builds[10]:.1f} ms wall "
        f"({cpu[10]:.1f} ms CPU), max {builds[-1]:.1f} ms wall"
    )
    for r in results:
        print(
            f"{r['viewers']:>3} viewers: Daphne CPU {r['cpu_percent']:5.1f}% of one core, "
            f"{r['snapshots_per_viewer_per_s']:.2f} snapshots/s per viewer"
        )
    print(f"load: {load}")


if __name__ == "__main__":
    main()
