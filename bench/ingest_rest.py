"""REST ingest throughput and latency (closed loop), and open-loop latency at a fixed offered load.

    .venv/bin/python bench/ingest_rest.py [--web 2] [--clients 64] [--seconds 10] [--rate 200]

Phase 1 (throughput): `--clients` concurrent keep-alive clients (aiohttp) post new messages as fast as
they can for `--seconds`, spread over `--web` Daphne processes. Phase 2 (open loop): requests start on
a fixed schedule of `--rate` per second whatever the answers do (no coordinated omission), latency
measured from the scheduled start. The Celery worker is not running (ingest only; the enqueued tasks
are dropped afterwards). Each message is a new client id (an INSERT), over 500 conversations.
"""

import argparse
import asyncio
import itertools
import json
import time

from pipeline_common import agents, cpu_seconds, drop_decision_queue, message, pct, prepare, run, start_web, stop


async def closed_loop(urls, tokens, clients: int, seconds: float) -> dict:
    import aiohttp

    counter = itertools.count()
    latencies, errors = [], 0
    deadline = time.perf_counter() + seconds

    async def client(k: int, session):
        nonlocal errors
        url = urls[k % len(urls)] + "/api/v1/messages"
        agent_id, token = tokens[k % len(tokens)]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        while time.perf_counter() < deadline:
            i = next(counter)
            body = json.dumps({"message": message(f"r{k}-{i}", i)})
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 202:
                    errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(k, session) for k in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": errors,
        "rate": len(latencies) / elapsed,
        "p50_ms": pct(latencies, 0.5),
        "p95_ms": pct(latencies, 0.95),
        "p99_ms": pct(latencies, 0.99),
    }


async def open_loop(urls, tokens, rate: float, seconds: float) -> dict:
    import aiohttp

    latencies, errors = [], 0
    total = int(rate * seconds)

    async def one(i: int, session, scheduled: float):
        nonlocal errors
        agent_id, token = tokens[i % len(tokens)]
        body = json.dumps({"message": message(f"o{i}-{time.time_ns()}", i)})
        async with session.post(
            urls[i % len(urls)] + "/api/v1/messages",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        ) as resp:
            await resp.read()
            if resp.status != 202:
                errors += 1
        latencies.append((time.perf_counter() - scheduled) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter() + 0.2
        tasks = []
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, session, scheduled)))
        await asyncio.gather(*tasks)
    return {
        "offered_rate": rate,
        "requests": total,
        "errors": errors,
        "p50_ms": pct(latencies, 0.5),
        "p95_ms": pct(latencies, 0.95),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": max(latencies),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--web", type=int, default=2)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--skip-open", action="store_true")
    args = parser.parse_args()
    env = prepare()
    tokens = agents(args.agents)
    web, urls = start_web(env, args.web)
    try:
        run(closed_loop(urls, tokens, 8, 2))  # warm-up: pools, caches
        cpu_before = cpu_seconds(web)
        result = run(closed_loop(urls, tokens, args.clients, args.seconds))
        result["server_cpu_ms_per_msg"] = (cpu_seconds(web) - cpu_before) * 1000 / max(1, result["requests"])
        print(
            json.dumps(
                {
                    "bench": "ingest_rest_throughput",
                    "web_processes": args.web,
                    "clients": args.clients,
                    **{k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()},
                },
                ensure_ascii=False,
            )
        )
        if not args.skip_open:
            result = run(open_loop(urls, tokens, args.rate, args.seconds))
            print(
                json.dumps(
                    {
                        "bench": "ingest_rest_open_loop",
                        "web_processes": args.web,
                        **{k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()},
                    },
                    ensure_ascii=False,
                )
            )
    finally:
        stop(*web)
        drop_decision_queue()


if __name__ == "__main__":
    main()
