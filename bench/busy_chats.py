"""Bursts in busy chats: N messages over a few conversations vs the same N over as many conversations.

    .venv/bin/python bench/busy_chats.py [--messages 1000] [--chats 20] [--agents 4] [--batch 50]
                                         [--debounce-ms 0] [--concurrency 256] [--compare]

Real processes: one Daphne, one Celery worker (its decision-queue consumer decides), PostgreSQL, Redis.
`--agents` WebSocket agents send the messages as `messages` frames of `--batch`, each agent sending its next
frame as soon as the previous one is answered (`accepted_batch`) — as fast as an agent flushing its queue
can. Chat c belongs to agent c % agents; message i goes to chat i % chats, so each chat gets its messages in
one burst. Every reply frame is acked `delivered`.

Measured: from the first frame sent until every message is decided (the database says so) and every reply
pushed has reached its agent; the worker's log is searched for Redis pool errors
("Too many connections", or "No connection available" from a blocking pool that waited in vain) and for
decisions that went on as retrying tasks. `--compare` runs the same messages over `--messages` chats
next (one message per chat). The engine is the real offline engine answering FAQ questions
(REVIEW_CONFIDENCE_THRESHOLD=0, so its answers are pushed). `--debounce-ms` sets PIPELINE_DEBOUNCE_MS: at 0
every message gets its own decision (the figure to compare with the issue's); above it, a chat's messages
arriving within the window of each other are joined into one question.
"""

import argparse
import asyncio
import json
import random
import time

from pipeline_common import agents, cpu_seconds, prepare, run, start_celery, start_web, stop

REDIS_POOL_ERRORS = ("Too many connections", "MaxConnectionsError", "No connection available")
RETRIES = ("retrying as a task",)


def questions() -> list[str]:
    from io import StringIO

    from apps.knowledge import demo
    from apps.knowledge.models import Entry

    demo.seed(StringIO())
    return list(Entry.objects.values_list("question", flat=True)[:200]) or ["充电桩怎么安装？"]


def frames(total: int, chats: int, n_agents: int, batch: int, texts: list[str], tag: str) -> list[list[dict]]:
    """Per agent, its `messages` frames in sending order."""
    per_agent: list[list[dict]] = [[] for _ in range(n_agents)]
    for i in range(total):
        chat = i % chats
        per_agent[chat % n_agents].append(
            {
                "id": f"{tag}-{i}",
                "chat_name": f"{tag}客户{chat}",
                "chat_type": "private",
                "sender": f"{tag}客户{chat}",
                "content": texts[i % len(texts)],
                "timestamp": time.time(),
            }
        )
    return [[items[k : k + batch] for k in range(0, len(items), batch)] for items in per_agent]


async def load(url: str, tokens, plan: list[list[list[dict]]], give_up_after: float) -> dict:
    import websockets

    replies_received = 0
    accepted_ids: set[int] = set()
    sockets = []
    for _agent_id, token in tokens:
        ws = await websockets.connect(
            url.replace("http://", "ws://") + "/ws/agent/",
            additional_headers={"Authorization": f"Bearer {token}"},
            max_size=2**22,
        )
        json.loads(await ws.recv())  # hello
        sockets.append(ws)
    answered = [asyncio.Queue() for _ in sockets]

    async def reader(k, ws):
        nonlocal replies_received
        try:
            async for raw in ws:
                frame = json.loads(raw)
                if frame["type"] == "accepted_batch":
                    accepted_ids.update(item["message_id"] for item in frame["accepted"])
                    answered[k].put_nowait(frame)
                elif frame["type"] == "reply":
                    replies_received += 1
                    await ws.send(json.dumps({"type": "ack", "reply_id": frame["reply_id"], "status": "delivered"}))
        except websockets.ConnectionClosed:
            pass

    async def sender(k, ws):
        for items in plan[k]:
            await ws.send(json.dumps({"type": "messages", "messages": items}))
            await answered[k].get()

    readers = [asyncio.create_task(reader(k, ws)) for k, ws in enumerate(sockets)]
    started = time.perf_counter()
    await asyncio.gather(*(sender(k, ws) for k, ws in enumerate(sockets)))
    sent_s = time.perf_counter() - started
    total = sum(len(items) for frames_ in plan for items in frames_)
    state = {}
    while time.perf_counter() - started < give_up_after:
        state = await asyncio.to_thread(progress, accepted_ids)
        if state["undecided"] == 0 and len(accepted_ids) == total and replies_received >= state["pushed"]:
            break
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - started
    for ws in sockets:
        await ws.close()
    for task in readers:
        task.cancel()
    return {
        "messages": total,
        "accepted": len(accepted_ids),
        "sent_s": round(sent_s, 2),
        "all_decided_and_replied_s": round(elapsed, 2),
        "timed_out": elapsed >= give_up_after,
        "reply_frames": replies_received,
        **state,
    }


def progress(message_ids: set[int]) -> dict:
    from django.db import close_old_connections
    from django.db.models import Count

    from apps.messages.models import Message, Reply

    close_old_connections()
    ids = list(message_ids)
    statuses = dict(Message.objects.filter(id__in=ids).values_list("status").annotate(n=Count("id")))
    undecided = statuses.get("received", 0) + statuses.get("processing", 0)
    pushed = Reply.objects.filter(message_id__in=ids, status__in=["sent", "delivered", "failed"]).count()
    return {"undecided": undecided, "pushed": pushed, "message_statuses": statuses}


def log_counts(path) -> dict:
    text = path.read_text(errors="replace")
    return {
        "redis_pool_errors": sum(text.count(needle) for needle in REDIS_POOL_ERRORS),
        "retried_as_task": sum(text.count(needle) for needle in RETRIES),
        "worker_log_errors": text.count(" ERROR "),
    }


def one_run(env, args, texts, chats: int, tag: str) -> dict:
    tokens = agents(args.agents)
    worker = start_celery({**env, "PIPELINE_CONCURRENCY": str(args.concurrency)})
    web, urls = start_web(env, 1)
    try:
        warm = frames(20, 20, len(tokens), 20, texts, f"w{tag}")
        run(load(urls[0], tokens, warm, 60))  # warm-up: engine, index, pools
        cpu_before = cpu_seconds([worker])
        plan = frames(args.messages, chats, len(tokens), args.batch, texts, tag)
        result = run(load(urls[0], tokens, plan, args.timeout))
        result["worker_cpu_s"] = round(cpu_seconds([worker]) - cpu_before, 2)
    finally:
        stop(*web, worker)
    result.update(log_counts(worker.log_path))
    return {"chats": chats, **result}


def load_average() -> list[float]:
    import os

    return [round(x, 2) for x in os.getloadavg()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--chats", type=int, default=20)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--batch", type=int, default=50, help="messages per `messages` frame")
    parser.add_argument("--debounce-ms", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=256, help="decisions in flight in the worker")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--compare", action="store_true", help="then the same messages over as many chats")
    args = parser.parse_args()
    env = prepare(REVIEW_CONFIDENCE_THRESHOLD="0", ENGINE_DEFAULT="offline", PIPELINE_DEBOUNCE_MS=str(args.debounce_ms))
    texts = questions()
    random.Random(7).shuffle(texts)
    stamp = str(int(time.time()))
    runs = [(args.chats, f"b{stamp}")] + ([(args.messages, f"s{stamp}")] if args.compare else [])
    for chats, tag in runs:
        before = load_average()
        result = one_run(env, args, texts, chats, tag)
        print(
            json.dumps(
                {
                    "bench": "busy_chats",
                    "debounce_ms": args.debounce_ms,
                    "agents": args.agents,
                    "batch": args.batch,
                    "load_average_before": before,
                    "load_average_after": load_average(),
                    **result,
                },
                ensure_ascii=False,
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
