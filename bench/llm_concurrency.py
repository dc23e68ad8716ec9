"""500 messages through the real pipeline and Celery worker, the LLM answering after 2 s: how long until
every reply is stored?

    .venv/bin/python bench/llm_concurrency.py [--messages 500] [--latency 2] [--workers 2] [--concurrency 300]
                                              [--ingest rest|ws] [--engine gateway|sleep]

Real processes: one Daphne (ingest), `--workers` Celery workers (each deciding up to `--concurrency`
messages at once from the decision queue), PostgreSQL, Redis, and the loopback OpenAI-compatible server (its
own process, `--latency` s per answer). Each message is a new conversation (no per-chat ordering wait); the
default engine makes exactly one gateway `complete()` call (bench/llm_concurrency_engine.py), i.e. rules →
engine → gateway (circuit breaker, budget reservation, usage tracking) → reply in the outbox → push.
Measured: from the first POST to the last Reply row, per-message latency (Message.received_at →
Reply.created_at), and the worker's CPU. DATABASE_URL / REDIS_URL default to the gateway engineer's
isolated resources (wxcs_gateway, Redis db 2).
"""

import argparse
import asyncio
import json
import os
import sys
import time

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/wxcs_gateway")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/2")

from pipeline_common import LOG_DIR, agents, cpu_seconds, message, pct, prepare, start_web, stop  # noqa: E402

from apps.core.testing import start_worker  # noqa: E402
from apps.llm_gateway.testing import fake_openai  # noqa: E402


async def send_all(url: str, tokens, n: int, stamp: str) -> float:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int):
            agent_id, token = tokens[i % len(tokens)]
            body = json.dumps({"message": message(f"{stamp}-{i}", i, chat=f"并发客户{stamp}-{i}")})
            async with session.post(
                url + "/api/v1/messages",
                data=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            ) as resp:
                await resp.read()
                assert resp.status == 202, resp.status

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return started


async def send_all_ws(url: str, tokens, n: int, stamp: str, batch: int) -> float:
    """Each agent on its own WebSocket sends its share in `messages` frames of `batch` (how an agent
    flushes a backlog), without waiting for `accepted_batch` between frames."""
    import websockets

    sockets = []
    for _agent_id, token in tokens:
        ws = await websockets.connect(
            url.replace("http://", "ws://") + "/ws/agent/",
            additional_headers={"Authorization": f"Bearer {token}"},
            max_size=2**24,
        )
        json.loads(await ws.recv())  # hello
        sockets.append(ws)

    async def agent(k: int, ws):
        mine = [i for i in range(n) if i % len(sockets) == k]
        frames = [mine[j : j + batch] for j in range(0, len(mine), batch)]
        for seq, frame in enumerate(frames):
            items = [message(f"{stamp}-{i}", i, chat=f"并发客户{stamp}-{i}") for i in frame]
            await ws.send(json.dumps({"type": "messages", "messages": items, "seq": seq}))
        accepted = 0
        while accepted < len(mine):
            answer = json.loads(await ws.recv())
            if answer["type"] == "accepted_batch":
                assert not answer["errors"], answer["errors"]
                accepted += len(answer["accepted"])
        await ws.close()

    started = time.perf_counter()
    await asyncio.gather(*(agent(k, ws) for k, ws in enumerate(sockets)))
    return started


def wait_for_replies(agent_ids: list[str], n: int, timeout: float) -> tuple[int, float]:
    from django.db import connection

    from apps.messages.models import Reply

    deadline = time.perf_counter() + timeout
    while True:
        done = Reply.objects.filter(agent_id__in=agent_ids).count()
        if done >= n or time.perf_counter() > deadline:
            connection.close()
            return done, time.perf_counter()
        time.sleep(0.02)


def run_once(
    env: dict,
    url: str,
    n: int,
    concurrency: int,
    timeout: float,
    workers: int = 1,
    ingest: str = "rest",
    batch: int = 25,
) -> dict:
    from django.db.models import F

    from apps.messages.models import Reply

    procs = [
        start_worker(
            {**env, "PIPELINE_CONCURRENCY": str(concurrency)},
            LOG_DIR,
            name=f"worker{concurrency}-{w}",
            concurrency=8,
            queues="messages,default",
            include=("bench.llm_concurrency_engine",),
        )
        for w in range(workers)
    ]
    try:
        for worker in procs:  # measure the steady state: the knowledge index loads once, at worker start
            deadline = time.monotonic() + 60
            while "knowledge index warmed" not in worker.log_path.read_text(errors="replace"):
                if time.monotonic() > deadline:
                    raise RuntimeError("worker did not warm up:\n" + worker.log_tail())
                time.sleep(0.1)
        tokens = agents(4)
        agent_ids = [a for a, _t in tokens]
        cpu0 = cpu_seconds(procs)
        stamp = str(int(time.time() * 1000))
        if ingest == "ws":
            started = asyncio.run(send_all_ws(url, tokens, n, stamp, batch))
        else:
            started = asyncio.run(send_all(url, tokens, n, stamp))
        sent = time.perf_counter()
        done, finished = wait_for_replies(agent_ids, n, timeout)
        cpu = cpu_seconds(procs) - cpu0
        rows = Reply.objects.filter(agent_id__in=agent_ids).annotate(lat=F("created_at") - F("message__received_at"))
        latencies = [r.lat.total_seconds() for r in rows]
        llm = [float((r.latency_ms or {}).get("llm", 0)) / 1000 for r in rows] if hasattr(Reply, "latency_ms") else []
        offline = rows.filter(provider="offline").count()
        return {
            "concurrency": concurrency,
            "messages": n,
            "answered": done,
            "offline_answers": offline,
            "ingest_s": round(sent - started, 2),
            "all_answered_s": round(finished - started, 2),
            "p50_s": round(pct(latencies, 0.5), 2),
            "p95_s": round(pct(latencies, 0.95), 2),
            "max_s": round(max(latencies), 2) if latencies else None,
            "llm_p50_s": round(pct(llm, 0.5), 2) if llm else None,
            "worker_cpu_s": round(cpu, 2),
            "worker_cpu_ms_per_msg": round(cpu * 1000 / max(1, done), 2),
        }
    finally:
        for worker in procs:
            worker.stop()


def threads_only(base_url: str, n: int, threads: int) -> dict:
    """What the worker does for the LLM part, without Celery, ingest or the pipeline: `threads` threads,
    each blocking on `apps.core.aio.run(complete(...))` on the process's shared event loop."""
    import collections
    from concurrent.futures import ThreadPoolExecutor

    from django.conf import settings

    from apps.core import aio
    from apps.llm_gateway.services import complete
    from apps.llm_gateway.testing import reset_gateway

    settings.LLM_PROVIDERS = {"custom": {"api_base": base_url, "api_key": "k", "model": "fake-model", "timeout": "30"}}
    settings.LLM_ROUTES = {}
    reset_gateway()
    messages = [{"role": "user", "content": "你好，我的充电桩订单什么时候发货？"}]
    aio.run(complete(messages))  # warm: clients, config
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda i: aio.run(complete(messages, user={"agent": "bench"})), range(n)))
    wall = time.perf_counter() - started
    aio.run(aio.drain())
    outcomes = collections.Counter("offline" if r.offline else "ok" for r in results)
    return {
        "mode": "threads+shared loop, no Celery",
        "threads": threads,
        "calls": n,
        "all_answered_s": round(wall, 2),
        **outcomes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[300], help="decisions in flight per worker process"
    )
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--engine",
        choices=["gateway", "sleep"],
        default="gateway",
        help="sleep: same wait without the gateway (the pipeline's own share)",
    )
    parser.add_argument(
        "--ingest",
        choices=["rest", "ws"],
        default="rest",
        help="rest: one POST per message; ws: each agent's WebSocket, `messages` frames of --batch",
    )
    parser.add_argument("--batch", type=int, default=25, help="messages per WebSocket frame (--ingest ws)")
    parser.add_argument("--threads-only", action="store_true", help="the gateway part alone (see threads_only)")
    args = parser.parse_args()
    if args.threads_only:
        prepare()
        with fake_openai(subprocess=True, record=False, latency=args.latency) as server:
            for threads in args.concurrency:
                result = threads_only(server.base_url, args.messages, threads)
                print(json.dumps({"bench": "llm_concurrency", "latency_s": args.latency, **result}, ensure_ascii=False))
        return
    with fake_openai(subprocess=True, record=False, latency=args.latency) as server:
        env = prepare(
            ENGINE_DEFAULT="gateway-bench"
            if args.engine == "gateway"
            else "sleep-bench",  # bench/llm_concurrency_engine
            BENCH_SLEEP_LATENCY=str(args.latency),
            **server.env("custom", model="fake-model", timeout=30),
            LLM_TOTAL_TIMEOUT="60",
        )
        web, urls = start_web(env, 1)
        try:
            for concurrency in args.concurrency:
                result = run_once(
                    env, urls[0], args.messages, concurrency, args.timeout, args.workers, args.ingest, args.batch
                )
                head = {
                    "bench": "llm_concurrency",
                    "engine": args.engine,
                    "latency_s": args.latency,
                    "workers": args.workers,
                    "ingest": args.ingest,
                }
                print(json.dumps({**head, **result}, ensure_ascii=False), flush=True)
        finally:
            stop(*web)


if __name__ == "__main__":
    sys.exit(main())
