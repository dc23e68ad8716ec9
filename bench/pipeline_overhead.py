"""Pipeline overhead: message in → reply pushed back to the agent, at a fixed offered load.

    .venv/bin/python bench/pipeline_overhead.py [--rate 100] [--seconds 20] [--agents 10] [--web 1] [--engine offline]

Real processes: `--web` Daphne(s), one Celery worker (its decision-queue consumer decides), PostgreSQL,
Redis. `--agents` WebSocket agents send `message` frames open loop (on a fixed schedule totalling `--rate`/s,
whatever the answers do) and ack every reply. Latency = frame sent → `reply` frame received, split per
message into stages that add up to it (one machine, one clock):

    ingest        frame sent → message stored            (Message.received_at)
    queue_wait    stored → claimed by a worker           (Message.claimed_at)
    decide        claimed → decision made                (Reply.created_at: rules, engine, outcome)
    store         decision made → stored                 (Message.decided_at)
    push          stored → the agent has the frame       (publish, the web process relays it, the socket)

The means of the stages add up to the mean latency (medians need not). The engine is the real offline
engine (knowledge base seeded with the EV-charger FAQ; questions taken from it, so it answers) with
REVIEW_CONFIDENCE_THRESHOLD=0 so every answer is pushed; `--engine echo` makes the echo engine of
apps.engines.testing (registered in the bench's worker) the default.
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
    sent_wall: dict[str, float] = {}
    received_wall: dict[int, float] = {}
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
                    received_wall[frame["message_id"]] = time.time()
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
        sent_wall[client_id] = time.time()
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
    times = {
        message_id: (sent_wall[client_id], received_wall[message_id])
        for message_id, client_id in by_message.items()
        if message_id in received_wall and client_id in sent_wall
    }
    return times, {
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


STAGES = ("ingest", "queue_wait", "decide", "store", "push")


def breakdown(times: dict[int, tuple[float, float]]) -> dict:
    """Per-stage milliseconds of the measured messages (see the module docstring); means add up."""
    from apps.messages.models import Reply

    rows = Reply.objects.filter(message_id__in=list(times)).values_list(
        "message_id",
        "message__received_at",
        "message__claimed_at",
        "created_at",
        "message__decided_at",
        "status",
        "engine",
    )
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    out = {"replies_in_db": 0, "statuses": {}, "engines": {}}
    for message_id, received, claimed, made, stored, status, engine in rows:
        out["replies_in_db"] += 1
        out["statuses"][status] = out["statuses"].get(status, 0) + 1
        out["engines"][engine] = out["engines"].get(engine, 0) + 1
        if None in (claimed, stored):
            continue
        sent, got = times[message_id]
        marks = [sent, received.timestamp(), claimed.timestamp(), made.timestamp(), stored.timestamp(), got]
        for stage, start, end in zip(STAGES, marks, marks[1:], strict=False):  # 5 stages between 6 marks
            stages[stage].append((end - start) * 1000)
    for stage, values in stages.items():
        if values:
            out[f"{stage}_mean_ms"] = round(statistics.fmean(values), 2)
            out[f"{stage}_p50_ms"] = round(statistics.median(values), 2)
            out[f"{stage}_p95_ms"] = round(pct(values, 0.95), 2)
    return out


def latencies_of(times: dict[int, tuple[float, float]]) -> list[float]:
    return [(got - sent) * 1000 for sent, got in times.values()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--web", type=int, default=1)
    parser.add_argument("--engine", choices=["offline", "echo"], default="offline")
    parser.add_argument("--concurrency", type=int, default=256, help="decisions in flight in the worker")
    args = parser.parse_args()
    overrides = {"REVIEW_CONFIDENCE_THRESHOLD": "0", "ENGINE_DEFAULT": "offline"}
    if args.engine == "echo":
        overrides["ENGINE_DEFAULT"] = "echo"
    env = prepare(**overrides)
    texts = questions()
    random.Random(7).shuffle(texts)
    tokens = agents(args.agents)
    worker = start_celery({**env, "PIPELINE_CONCURRENCY": str(args.concurrency)})
    web, urls = start_web(env, args.web)
    try:
        run(load(urls, tokens, texts, 20, 1.5))  # warm-up: engine, index, pools
        web_before, worker_before = cpu_seconds(web), cpu_seconds([worker])
        times, result = run(load(urls, tokens, texts, args.rate, args.seconds))
        result["web_cpu_ms_per_msg"] = (cpu_seconds(web) - web_before) * 1000 / max(1, result["sent"])
        result["worker_cpu_ms_per_msg"] = (cpu_seconds([worker]) - worker_before) * 1000 / max(1, result["sent"])
        result["server_cpu_ms_per_msg"] = result["web_cpu_ms_per_msg"] + result["worker_cpu_ms_per_msg"]
        result["mean_ms"] = statistics.fmean(latencies_of(times)) if times else None
        result.update(breakdown(times))
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
