"""What one round trip of the message path's plumbing costs in client CPU, measured one at a time.

    .venv/bin/python bench/plumbing_costs.py [--n 2000]

- a PostgreSQL statement on the async psycopg pool (apps.core.db.pg);
- a Redis command: redis.asyncio directly, and through apps.core.redis.batched;
- a channel-layer push (`group_send` received by a subscribed channel in the same process), with channels-redis'
  list-based `RedisChannelLayer` and its pub/sub `RedisPubSubChannelLayer` (settings.CHANNEL_LAYERS);
- a Celery task: publishing with `send_task`, and a worker (threads pool) receiving and running an empty task.
These are the figures behind the design of the decision queue and the channel layer (bench/README.md, issue 14).
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from pipeline_common import ROOT, prepare


async def per_call(n: int, call) -> float:
    await call(0)
    started = time.process_time()
    for i in range(n):
        await call(i)
    return (time.process_time() - started) * 1e6 / n


async def database_and_redis(n: int) -> dict:
    from apps.core import db, redis

    async def statement(i):
        async with db.pg() as conn:
            await conn.execute("UPDATE wxmessages_reply SET delivery_error = %s WHERE id = %s", ["", -1])

    key = redis.key("bench", "plumbing")
    return {
        "postgres statement (pool)": await per_call(n, statement),
        "redis command": await per_call(n, lambda i: redis.aclient().incrby(key, 1)),
        "redis command, batched alone": await per_call(n, lambda i: redis.batched("INCRBY", key, 1)),
    }


async def channel_layer(n: int, layer) -> float:
    channel = await layer.new_channel()
    await layer.group_add("bench.plumbing", channel)
    frame = {"type": "reply.push", "frame": {"type": "reply", "reply_id": 1, "content": "您好" * 20}}

    async def push(i):
        await layer.group_send("bench.plumbing", frame)
        await layer.receive(channel)

    cost = await per_call(n, push)
    await layer.group_discard("bench.plumbing", channel)
    return cost


def celery_costs(n: int) -> dict:
    """Publishing cost in this process; receiving + running cost in a worker that runs only an empty task."""
    import psutil

    from apps.core.testing import Process, child_environment
    from celery_app import app

    task_dir = Path(tempfile.mkdtemp())
    (task_dir / "bench_noop.py").write_text(
        "from celery import shared_task\n\n\n"
        "@shared_task(name='bench.noop', acks_late=True)\ndef noop(i):\n    return None\n"
    )
    env = child_environment(LOG_LEVEL="WARNING", PYTHONPATH=f"{task_dir}{os.pathsep}{ROOT}")
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "celery_app",
        "worker",
        "-Q",
        "bench-noop",
        "-P",
        "threads",
        "-c",
        "16",
        "--loglevel",
        "WARNING",
        "--include",
        "bench_noop",
        "--without-mingle",
        "--without-gossip",
        "-n",
        "bench-noop@%h",
    ]
    worker = Process("noop-worker", argv, env, task_dir)
    try:
        time.sleep(8)
        cpu = psutil.Process(worker.popen.pid)
        before = sum(cpu.cpu_times()[:2])
        started = time.process_time()
        with app.producer_or_acquire() as producer:
            for i in range(n):
                app.send_task("bench.noop", (i,), queue="bench-noop", producer=producer)
        publish = (time.process_time() - started) * 1e3 / n
        from apps.core import redis

        while redis.client().llen("bench-noop"):
            time.sleep(0.05)
        time.sleep(2)
        run = (sum(cpu.cpu_times()[:2]) - before) * 1e3 / n
    finally:
        worker.stop()
    return {"celery publish (ms)": publish, "celery receive + run an empty task (ms)": run}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    prepare()
    from channels_redis.core import RedisChannelLayer
    from channels_redis.pubsub import RedisPubSubChannelLayer
    from django.conf import settings

    host = settings.REDIS_URL

    async def measure() -> dict:
        results = await database_and_redis(args.n)
        results["channel push, RedisChannelLayer"] = await channel_layer(args.n, RedisChannelLayer(hosts=[host]))
        results["channel push, RedisPubSubChannelLayer"] = await channel_layer(
            args.n, RedisPubSubChannelLayer(hosts=[host])
        )
        return results

    for name, micros in asyncio.run(measure()).items():
        print(f"{name}: {micros:.0f} µs CPU per call")
    for name, value in celery_costs(args.n).items():
        print(f"{name}: {value:.2f}")


if __name__ == "__main__":
    main()
