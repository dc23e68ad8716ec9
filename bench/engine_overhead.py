"""Engine overhead: resolve_engine, memory retrieval (cache miss vs Redis hit), ChatEngine vs a bare
gateway call, and many replies in flight at once.

    .venv/bin/python bench/engine_overhead.py [--calls 300] [--concurrent 200] [--latency 0.2]

Needs the machine's PostgreSQL and Redis (POSTGRES_URL, default postgres://postgres@127.0.0.1:5432,
and REDIS_URL, default redis://127.0.0.1:6379/5). It creates its own database `wxcs_engines_bench`
(dropped and re-created each run) and migrates it. The LLM is the loopback OpenAI-compatible server
(apps.llm_gateway.testing) in its own process, answering at once (or after --latency seconds for the
concurrency run), driven through the real gateway and openai client.

What is timed:
- `resolve_engine` on the hot path (no switch in between: an in-process check of the state);
- `retrieve_memory` for a conversation with 10 recent turns, 5 facts and a summary: first call per
  distinct query (database) vs the second (Redis);
- one ChatEngine reply (customer bound, knowledge base empty, no tool call) vs the bare
  `apps.llm_gateway.services.complete` call it makes, same prompt size: the difference is the
  engine's own cost (customer lookup, memory, retrieval, prompt, metrics);
- `--concurrent` ChatEngine replies at once on one event loop with the model taking --latency s.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB_NAME = "wxcs_engines_bench"


def recreate_database(server_url: str) -> None:
    import psycopg

    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return f"p50 {at(0.5):8.3f}  p95 {at(0.95):8.3f}  p99 {at(0.99):8.3f}  mean {statistics.fmean(ordered):8.3f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()

    server_url = os.environ.get("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
    recreate_database(server_url)
    os.environ["DATABASE_URL"] = f"{server_url}/{DB_NAME}"
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/5")
    os.environ["CACHE_KEY_PREFIX"] = "engines-bench"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wxcs.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.conf import settings

    from apps.engines.tests.factories import ConversationSummaryFactory, build_world
    from apps.llm_gateway.testing import fake_openai, reset_gateway

    world = build_world()
    for number in range(10):
        question, answer = f"第{number}个问题：充电桩怎么安装？", f"第{number}个回答：先预约勘测。"
        world.exchange(question, answer, 20 - number)
    from apps.core import aio
    from apps.engines import memory

    ConversationSummaryFactory(conversation_id=world.conversation.pk, summary="客户在咨询安装。")
    for number in range(5):
        aio.run(memory.remember_fact(world.conversation.pk, world.sender, f"事实{number}：客户住在渝北区"))

    with fake_openai(subprocess=True, record=False) as server:
        settings.LLM_PROVIDERS = {
            "custom": {"api_base": server.base_url, "api_key": server.api_key, "model": "fake-model", "timeout": 30}
        }
        settings.LLM_ROUTES = {
            "default": [{"provider": "custom", "model": "fake-model"}],
            "cheap": [{"provider": "custom", "model": "fake-cheap"}],
            "embedding": [{"provider": "custom", "model": "fake-embedding"}],
        }
        reset_gateway()
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(f"load before: {load}")
        asyncio.run(run(world, server, args))
        print(f"load after:  {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


async def hot_paths(world, args) -> None:
    from apps.engines import memory
    from apps.engines.manager import resolve_engine

    conversation_id = world.conversation.pk
    await resolve_engine(conversation_id)
    started = time.perf_counter()
    rounds = 20000
    for _ in range(rounds):
        await resolve_engine(conversation_id)
    print(f"resolve_engine (hot path):       {(time.perf_counter() - started) / rounds * 1e6:8.2f} µs per call")

    misses, hits = [], []
    for number in range(args.calls):
        query = f"安装要多久 {number}"
        t = time.perf_counter()
        _, hit = await memory.retrieve_memory(conversation_id, world.sender, query)
        misses.append((time.perf_counter() - t) * 1000)
        assert not hit
        t = time.perf_counter()
        _, hit = await memory.retrieve_memory(conversation_id, world.sender, query)
        hits.append((time.perf_counter() - t) * 1000)
        assert hit
    print(f"retrieve_memory, database (ms):  {percentiles(misses)}")
    print(f"retrieve_memory, Redis hit (ms): {percentiles(hits)}")


async def engine_vs_gateway(world, args, engine, message) -> None:
    from apps.engines.chat import build_prompt
    from apps.engines.timing import Stopwatch
    from apps.llm_gateway import services as gateway

    conversation_id = world.conversation.pk
    turn = await engine.prepare(message, conversation_id, None, Stopwatch())
    prompt = build_prompt(turn)
    for _ in range(20):  # warm up clients and pools
        await engine.generate_response(message, conversation_id, use_tools=False)
        await gateway.complete(prompt, route="default")
    engine_ms, bare_ms, stages = [], [], {}
    engine_cpu = bare_cpu = 0.0
    for _ in range(args.calls):
        t, c = time.perf_counter(), time.process_time()
        reply = await engine.generate_response(message, conversation_id, use_tools=False)
        engine_ms.append((time.perf_counter() - t) * 1000)
        engine_cpu += time.process_time() - c
        for stage, value in reply.latency_ms.items():
            stages.setdefault(stage, []).append(value)
        t, c = time.perf_counter(), time.process_time()
        await gateway.complete(prompt, route="default")
        bare_ms.append((time.perf_counter() - t) * 1000)
        bare_cpu += time.process_time() - c
    print(f"ChatEngine reply (ms):           {percentiles(engine_ms)}")
    print(f"bare gateway complete (ms):      {percentiles(bare_ms)}")
    print("ChatEngine stages, median ms:    " + "  ".join(f"{k} {statistics.median(v):.2f}" for k, v in stages.items()))
    overhead = statistics.median(engine_ms) - statistics.median(bare_ms)
    print(f"engine overhead (median diff):   {overhead:8.3f} ms")
    print(
        f"CPU per reply (this process):    engine {engine_cpu / args.calls * 1000:.2f} ms, "
        f"bare gateway {bare_cpu / args.calls * 1000:.2f} ms"
    )


async def run(world, server, args) -> None:
    from apps.engines.chat import ChatEngine

    await hot_paths(world, args)
    engine = ChatEngine()
    message = [{"role": "user", "content": "充电桩安装需要准备什么？", "name": world.sender}]
    await engine_vs_gateway(world, args, engine, message)

    server.configure(latency=args.latency)
    t = time.perf_counter()
    replies = await asyncio.gather(
        *(engine.generate_response(message, world.conversation.pk, use_tools=False) for _ in range(args.concurrent))
    )
    wall = time.perf_counter() - t
    offline = sum(reply.offline for reply in replies)
    print(
        f"{args.concurrent} replies at once, model {args.latency * 1000:.0f} ms: {wall:.2f} s wall "
        f"({offline} offline fallbacks)"
    )


if __name__ == "__main__":
    main()
