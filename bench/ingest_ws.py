"""WebSocket ingest throughput: `--connections` agents, each sending `messages` frames of `--batch`
messages and waiting for the `accepted_batch` before the next (up to `--inflight` frames in flight),
for `--seconds`, over `--web` Daphne processes. Latency = frame sent → accepted_batch received.
Without a worker (ingest only; the queued tasks are dropped afterwards).

    .venv/bin/python bench/ingest_ws.py [--web 2] [--connections 8] [--batch 50] [--seconds 10]
"""

import argparse
import asyncio
import itertools
import json
import time

from pipeline_common import agents, cpu_seconds, drop_decision_queue, message, pct, prepare, run, start_web, stop


async def load(urls, tokens, batch: int, inflight: int, seconds: float) -> dict:
    import websockets

    counter = itertools.count()
    latencies, sent_messages, errors = [], 0, 0
    deadline = time.perf_counter() + seconds

    async def connection(k: int):
        nonlocal sent_messages, errors
        agent_id, token = tokens[k]
        url = urls[k % len(urls)].replace("http://", "ws://") + "/ws/agent/"
        async with websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=2**24
        ) as ws:
            json.loads(await ws.recv())  # hello
            pending: dict[int, float] = {}
            seq = itertools.count()

            async def sender():
                while time.perf_counter() < deadline:
                    while len(pending) >= inflight:  # noqa: ASYNC110 - cheap poll in a load generator
                        await asyncio.sleep(0.0005)
                    n = next(seq)
                    items = [message(f"w{k}-{n}-{j}", next(counter)) for j in range(batch)]
                    pending[n] = time.perf_counter()
                    await ws.send(json.dumps({"type": "messages", "messages": items, "seq": n}))

            async def receiver():
                nonlocal sent_messages, errors
                order = itertools.count()
                while time.perf_counter() < deadline + 5 and (time.perf_counter() < deadline or pending):
                    try:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    except TimeoutError:
                        break
                    if frame["type"] == "accepted_batch":
                        n = next(order)  # frames of one connection are answered in order
                        latencies.append((time.perf_counter() - pending.pop(n)) * 1000)
                        sent_messages += len(frame["accepted"])
                        errors += len(frame["errors"])
                    elif frame["type"] == "error":
                        errors += 1

            await asyncio.gather(sender(), receiver())

    started = time.perf_counter()
    await asyncio.gather(*(connection(k) for k in range(len(tokens))))
    elapsed = time.perf_counter() - started
    return {
        "messages": sent_messages,
        "errors": errors,
        "rate": sent_messages / elapsed,
        "frames": len(latencies),
        "frame_p50_ms": pct(latencies, 0.5),
        "frame_p95_ms": pct(latencies, 0.95),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--web", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--inflight", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    env = prepare()
    tokens = agents(args.connections)
    web, urls = start_web(env, args.web)
    try:
        run(load(urls, tokens, args.batch, 1, 1.5))  # warm-up
        cpu_before = cpu_seconds(web)
        result = run(load(urls, tokens, args.batch, args.inflight, args.seconds))
        result["server_cpu_ms_per_msg"] = (cpu_seconds(web) - cpu_before) * 1000 / max(1, result["messages"])
        print(
            json.dumps(
                {
                    "bench": "ingest_ws_throughput",
                    "web_processes": args.web,
                    "connections": args.connections,
                    "batch": args.batch,
                    **{k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()},
                },
                ensure_ascii=False,
            )
        )
    finally:
        stop(*web)
        drop_decision_queue()


if __name__ == "__main__":
    main()
