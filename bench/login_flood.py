"""A flood of wrong-key agent logins against a running server, from its own process (so that the client's CPU
does not count against the server's latency in whoever measures meanwhile).

    .venv/bin/python bench/login_flood.py http://127.0.0.1:8000 [--total 300] [--concurrency 40] [--spoofed]

`--spoofed`: each login a new agent id from a new address (X-Forwarded-For; the server must trust one proxy,
CLIENT_IP_PROXY_COUNT=1), so that the per-id and per-address throttles do not apply and only the hashing
gate stands between the flood and the CPU. Prints one JSON line: status counts, seconds, a 429's
Retry-After and body.

Used by apps/messages/tests/test_e2e_credentials.py; figures in bench/README.md.
"""

import argparse
import asyncio
import collections
import json
import time

import httpx


async def flood(url: str, total: int, concurrency: int, spoofed: bool) -> dict:
    gate = asyncio.Semaphore(concurrency)
    statuses: collections.Counter = collections.Counter()
    sample: dict = {}

    async def one(http: httpx.AsyncClient, i: int) -> None:
        agent_id, headers = "agt_flooded", {}
        if spoofed:
            agent_id, headers = f"agt_flood{i}", {"X-Forwarded-For": f"10.7.{i // 250}.{i % 250}"}
        async with gate:
            response = await http.post(
                "/api/v1/auth/login", json={"agent_id": agent_id, "api_key": f"k{i}"}, headers=headers
            )
        statuses[response.status_code] += 1
        if response.status_code == 429 and not sample:
            sample.update(retry_after=response.headers.get("Retry-After"), body=response.json())

    started = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(one(http, i) for i in range(total)))
    return {"statuses": dict(statuses), "seconds": round(time.perf_counter() - started, 3), "sample_429": sample}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--total", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=40)
    parser.add_argument("--spoofed", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(flood(args.url, args.total, args.concurrency, args.spoofed))), flush=True)


if __name__ == "__main__":
    main()
