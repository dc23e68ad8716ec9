"""Pipeline overhead: message in → reply pushed back to the agent, at a fixed offered load.

    .venv/bin/python bench/pipeline_overhead.py [--rate 100] [--seconds 20] [--agents 10] [--web 1] [--engine offline]

Real processes: `--web` Daphne(s), one Celery worker (threads, CELERY_WORKER_CONCURRENCY default),
PostgreSQL, Redis. `--agents` WebSocket agents send `message` frames open loop (on a fixed schedule
totalling `--rate`/s, whatever the answers do) and ack every reply. Latency = frame sent → `reply`
frame received, i.e. ingest + queue + rules + engine + store + push. The engine is the real offline
engine (knowledge base seeded with the EV-charger FAQ; questions taken from it, so it answers) with
REVIEW_CONFIDENCE_THRESHOLD=0 so every answer is pushed; `--engine echo` uses apps.messages.testing.EchoEngine.
"""

import argparse
import asyncio
import json
import random
import statistics
import time

from pipeline_common import agents, cpu_seconds, pct, prepare, run, start_celery, start_web, stop


def questions() -> list[str]:
    from io import StringIO

    from apps.knowledge import demo
    from apps.knowledge.models import Entry

    demo.seed(StringIO())
    return list(Entry.objects.values_list("question", flat=True)[:200]) or ["充电桩怎么安装？"]


async def load(urls, tokens, texts, rate: float, seconds: float) -> dict:
    import websockets

    total = int(rate * seconds)
    sent_at: dict[str, float] = {}
    by_message: dict[int, str] = {}
    latencies: list[float] = []
    errors = 0
    done = asyncio.Event()
    sockets = []
    for k, (_agent_id, token) in enumerate(tokens):
        ws = await websockets.connect(
            urls[k % len(urls)].replace("http://", "ws://") + "/ws/agent/",
            additional_headers={"Authorization": f"Bearer {token}"},
            max_size=2**22,
        )
        json.loads(await ws.recv())  # hello
        sockets.append(ws)

    async def reader(ws):
        nonlocal errors
        try:
            async for raw in ws:
                frame = json.loads(raw)
                if frame["type"] == "accepted":
                    by_message[frame["message_id"]] = frame["client_id"]
                elif frame["type"] == "reply":
                    client_id = by_message.get(frame["message_id"])
                    if client_id in sent_at:
                        latencies.append((time.perf_counter() - sent_at.pop(client_id)) * 1000)
                    await ws.send(json.dumps({"type": "ack", "reply_id": frame["reply_id"], "status": "delivered"}))
                    if len(latencies) >= total:
                        done.set()
                elif frame["type"] == "error":
                    errors += 1
        except websockets.ConnectionClosed:
            pass

    readers = [asyncio.create_task(reader(ws)) for ws in sockets]
    start = time.perf_counter() + 0.3
    stamp = time.time_ns()
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        client_id = f"p{stamp}-{i}"
        sent_at[client_id] = scheduled
        ws = sockets[i % len(sockets)]
        await ws.send(
            json.dumps(
                {
                    "type": "message",
                    "message": {
                        "id": client_id,
                        "chat_name": f"客户{i % 300}",
                        "chat_type": "private",
                        "sender": f"客户{i % 300}",
                        "content": texts[i % len(texts)],
                        "timestamp": time.time(),
                    },
                }
            )
        )
    try:
        await asyncio.wait_for(done.wait(), 30)
    except TimeoutError:
        pass
    for ws in sockets:
        await ws.close()
    for task in readers:
        task.cancel()
    return {
        "offered_rate": rate,
        "sent": total,
        "replies": len(latencies),
        "missing": total - len(latencies),
        "errors": errors,
        "p50_ms": pct(latencies, 0.5),
        "p95_ms": pct(latencies, 0.95),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": max(latencies) if latencies else None,
    }


def breakdown(since) -> dict:
    from apps.messages.models import Reply

    rows = list(Reply.objects.filter(created_at__gte=since).values_list("latency_ms", "status", "engine"))
    out = {"replies_in_db": len(rows), "statuses": {}, "engines": {}}
    for _, status, engine in rows:
        out["statuses"][status] = out["statuses"].get(status, 0) + 1
        out["engines"][engine] = out["engines"].get(engine, 0) + 1
    for key in ("queue_wait", "rules", "retrieval", "llm", "total"):
        values = [r[0].get(key) for r in rows if r[0].get(key) is not None]
        if values:
            out[f"{key}_p50_ms"] = round(statistics.median(values), 2)
            out[f"{key}_p95_ms"] = round(pct(values, 0.95), 2)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--web", type=int, default=1)
    parser.add_argument("--engine", choices=["offline", "echo"], default="offline")
    parser.add_argument("--concurrency", type=int, default=64, help="worker threads")
    args = parser.parse_args()
    from django.utils import timezone

    overrides = {"REVIEW_CONFIDENCE_THRESHOLD": "0", "ENGINE_DEFAULT": "offline"}
    if args.engine == "echo":
        overrides["PIPELINE_ENGINE_CLASS"] = "apps.messages.testing.EchoEngine"
    env = prepare(**overrides)
    texts = questions()
    random.Random(7).shuffle(texts)
    tokens = agents(args.agents)
    worker = start_celery(env, concurrency=args.concurrency)
    web, urls = start_web(env, args.web)
    try:
        run(load(urls, tokens, texts, 20, 1.5))  # warm-up: engine, index, pools
        since = timezone.now()
        web_before, worker_before = cpu_seconds(web), cpu_seconds([worker])
        result = run(load(urls, tokens, texts, args.rate, args.seconds))
        result["web_cpu_ms_per_msg"] = (cpu_seconds(web) - web_before) * 1000 / max(1, result["sent"])
        result["worker_cpu_ms_per_msg"] = (cpu_seconds([worker]) - worker_before) * 1000 / max(1, result["sent"])
        result.update(breakdown(since))
        print(
            json.dumps(
                {
                    "bench": "pipeline_overhead",
                    "engine": args.engine,
                    "web_processes": args.web,
                    "agents": args.agents,
                    **{k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()},
                },
                ensure_ascii=False,
            )
        )
    finally:
        stop(*web, worker)


if __name__ == "__main__":
    main()
