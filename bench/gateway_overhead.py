"""Gateway overhead over a bare AsyncOpenAI call, and LiteLLM's Router side by side, in one run.

    DATABASE_URL=postgres://… REDIS_URL=redis://… .venv/bin/python bench/gateway_overhead.py [--n 200 --rounds 5]

One loopback OpenAI-compatible server (apps.llm_gateway.testserver, its own process, no latency) answers
everything. Calls are sequential (one in flight), interleaved in rounds so drift hits every contender alike:
- bare: `AsyncOpenAI(http_client=DefaultAioHttpClient(), max_retries=0).chat.completions.create`;
- gateway: `apps.llm_gateway.services.complete(route="default")` — the production path: circuit breaker
  and budget reservation in Redis (the seeded global daily budget applies), usage + cost tracked in Redis
  and queued for the database (flushed in the background), Prometheus metrics;
- LiteLLM: `litellm.Router(...).acompletion`, in a separate virtualenv (var/bench-litellm, created on first
  run from requirements/bench-litellm.txt: LiteLLM requires openai<3, the project pins openai 3.x), with
  its own bare AsyncOpenAI baseline in the same process, same server, same time.
Overhead = contender − its bare baseline (median and p95 of per-call latency); CPU = process CPU time per call.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wxcs.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from apps.llm_gateway.testing import fake_openai  # noqa: E402

MESSAGES = [{"role": "system", "content": "你是客服。"}, {"role": "user", "content": "你好，请问发货了吗？"}]
LITELLM_VENV = ROOT / "var" / "bench-litellm"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def litellm_python() -> Path | None:
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        print("creating", LITELLM_VENV, "(LiteLLM + openai 2.x) …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements" / "bench-litellm.txt")],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            print("LiteLLM could not be installed:", result.stderr[-2000:])
            return None
    return python


async def gateway_side(base_url: str, n: int, rounds: int, warmup: int, concurrent: int, slow_url: str) -> dict:
    from openai import AsyncOpenAI, DefaultAioHttpClient

    from apps.core.aio import drain
    from apps.llm_gateway.services import complete
    from apps.llm_gateway.testing import reset_gateway

    settings.LLM_PROVIDERS = {
        "bench": {"kind": "custom", "api_base": base_url, "api_key": "sk-bench", "model": "fake-model"}
    }
    settings.LLM_ROUTES = {"default": [{"provider": "bench", "model": "fake-model"}]}
    reset_gateway()
    bare = AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, http_client=DefaultAioHttpClient())

    async def one_bare():
        await bare.chat.completions.create(model="fake-model", messages=MESSAGES)

    async def one_gateway():
        c = await complete(MESSAGES, user={"agent": "bench", "customer": "c1"})
        assert not c.offline, c.attempts

    out: dict = {"bare": [], "gateway": [], "bare_cpu": 0.0, "gateway_cpu": 0.0}
    for fn in (one_bare, one_gateway):
        for _ in range(warmup):
            await fn()
    for _ in range(rounds):
        for name, fn in (("bare", one_bare), ("gateway", one_gateway)):
            cpu = time.process_time()
            for _ in range(n):
                t0 = time.perf_counter()
                await fn()
                out[name].append((time.perf_counter() - t0) * 1000)
            out[f"{name}_cpu"] += time.process_time() - cpu
    await bare.close()
    await drain()
    if concurrent:  # the second server answers after a delay: how long do `concurrent` calls at once take?
        settings.LLM_PROVIDERS["bench"]["api_base"] = slow_url
        reset_gateway()
        bare = AsyncOpenAI(base_url=slow_url, api_key="sk-bench", max_retries=0, http_client=DefaultAioHttpClient())
        out["bare_wall"], out["gateway_wall"] = [], []
        for _ in range(3):
            for name, fn in (("bare", one_bare), ("gateway", one_gateway)):
                t0 = time.perf_counter()
                await asyncio.gather(*[fn() for _ in range(concurrent)])
                out[f"{name}_wall"].append(time.perf_counter() - t0)
            await drain()
        await bare.close()
    return out


def summary(name: str, values: list[float], baseline: list[float], cpu: float, base_cpu: float) -> dict:
    return {
        "contender": name,
        "median_ms": round(statistics.median(values), 3),
        "p95_ms": round(pct(values, 0.95), 3),
        "overhead_median_ms": round(statistics.median(values) - statistics.median(baseline), 3),
        "overhead_p95_ms": round(pct(values, 0.95) - pct(baseline, 0.95), 3),
        "cpu_ms_per_call": round(cpu * 1000 / len(values), 3),
        "extra_cpu_ms_per_call": round((cpu - base_cpu) * 1000 / len(values), 3),
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="calls per contender per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--concurrent", type=int, default=500, help="calls at once in the concurrent phase (0: skip)")
    parser.add_argument("--latency", type=float, default=0.2, help="server latency (s) in the concurrent phase")
    parser.add_argument("--json", help="also write the results here")
    return parser.parse_args()


def litellm_side(args: argparse.Namespace, base_url: str, slow_url: str) -> dict | None:
    """LiteLLM's numbers from its own virtualenv (None when it cannot run)."""
    python = None if args.no_litellm else litellm_python()
    if python is None:
        return None
    argv = [str(python), str(ROOT / "bench" / "gateway_litellm_worker.py"), "--base-url", base_url]
    argv += ["--n", str(args.n), "--rounds", str(args.rounds), "--warmup", str(args.warmup)]
    argv += ["--concurrent", str(args.concurrent), "--slow-url", slow_url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        print("LiteLLM worker failed:", proc.stderr[-3000:])
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def collect(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """(sequential summaries, concurrent wall times) of every contender."""
    results, walls = [], {}
    with (
        fake_openai(subprocess=True, record=False) as server,
        fake_openai(subprocess=True, record=False, latency=args.latency) as slow,
    ):
        ours = asyncio.run(
            gateway_side(server.base_url, args.n, args.rounds, args.warmup, args.concurrent, slow.base_url)
        )
        bare_name, gateway_name = "bare AsyncOpenAI (openai 3.x, aiohttp)", "wxcs gateway complete()"
        results.append(summary(bare_name, ours["bare"], ours["bare"], ours["bare_cpu"], ours["bare_cpu"]))
        results.append(summary(gateway_name, ours["gateway"], ours["bare"], ours["gateway_cpu"], ours["bare_cpu"]))
        walls[bare_name], walls[gateway_name] = ours.get("bare_wall"), ours.get("gateway_wall")
        theirs = litellm_side(args, server.base_url, slow.base_url)
    if theirs is not None:
        v = theirs.get("versions", {})
        bare_name = f"bare AsyncOpenAI (openai {v.get('openai')}, LiteLLM's venv)"
        lite_name = f"LiteLLM Router {v.get('litellm', '')}".strip()
        results.append(summary(bare_name, theirs["bare"], theirs["bare"], theirs["bare_cpu"], theirs["bare_cpu"]))
        results.append(summary(lite_name, theirs["litellm"], theirs["bare"], theirs["litellm_cpu"], theirs["bare_cpu"]))
        walls[bare_name], walls[lite_name] = theirs.get("bare_wall"), theirs.get("litellm_wall")
    return results, walls


def report(args: argparse.Namespace, results: list[dict], walls: dict) -> None:
    print(f"\n{args.rounds} rounds × {args.n} sequential calls per contender, loopback server, no latency\n")
    print("| contender | median ms | p95 ms | overhead median ms | overhead p95 ms | CPU ms/call | extra CPU ms/call |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['contender']} | {r['median_ms']} | {r['p95_ms']} | {r['overhead_median_ms']} | "
            f"{r['overhead_p95_ms']} | {r['cpu_ms_per_call']} | {r['extra_cpu_ms_per_call']} |"
        )
    gw = next(r for r in results if r["contender"].startswith("wxcs"))
    lite = next((r for r in results if r["contender"].startswith("LiteLLM")), None)
    if lite and gw["overhead_median_ms"] > 0:
        ratio = lite["overhead_median_ms"] / gw["overhead_median_ms"]
        cpu_ratio = lite["extra_cpu_ms_per_call"] / max(gw["extra_cpu_ms_per_call"], 1e-6)
        print(f"\nLiteLLM / gateway: latency overhead {ratio:.1f}×, extra CPU per call {cpu_ratio:.1f}×")
    if args.concurrent:
        print(f"\n{args.concurrent} calls at once, server latency {args.latency * 1000:.0f} ms, 3 rounds (seconds)\n")
        print("| contender | round 1 | round 2 | round 3 |")
        print("| --- | ---: | ---: | ---: |")
        for name, values in walls.items():
            if values:
                print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + " |")


def main() -> None:
    args = arguments()
    if not settings.REDIS_URL or "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
        sys.exit("set DATABASE_URL (PostgreSQL) and REDIS_URL: the gateway's production path needs both")
    call_command("migrate", verbosity=0)
    results, walls = collect(args)
    report(args, results, walls)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"sequential": results, "concurrent": walls}, ensure_ascii=False, indent=2)
        )


if __name__ == "__main__":
    main()
