"""LiteLLM side of bench/gateway_overhead.py, run in its own virtualenv (LiteLLM pins openai<3, the project
uses openai 3.x): per-call latency of a bare AsyncOpenAI call and of LiteLLM's Router on the same loopback
server, interleaved in rounds. Prints one JSON object. No Django."""

import argparse
import asyncio
import json
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_LOG", "ERROR")

MESSAGES = [{"role": "system", "content": "你是客服。"}, {"role": "user", "content": "你好，请问发货了吗？"}]


async def main(base_url: str, n: int, rounds: int, warmup: int, concurrent: int, slow_url: str) -> dict:
    import litellm
    from litellm import Router
    from openai import AsyncOpenAI, DefaultAioHttpClient

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    bare = AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, http_client=DefaultAioHttpClient())
    router = Router(
        model_list=[
            {
                "model_name": "fake",
                "litellm_params": {"model": "openai/fake-model", "api_base": base_url, "api_key": "sk-bench"},
            }
        ],
        num_retries=0,
    )

    async def one_bare():
        await bare.chat.completions.create(model="fake-model", messages=MESSAGES)

    async def one_litellm():
        await router.acompletion(model="fake", messages=MESSAGES)

    out: dict = {"bare": [], "litellm": [], "bare_cpu": 0.0, "litellm_cpu": 0.0, "bare_wall": [], "litellm_wall": []}
    for fn in (one_bare, one_litellm):
        for _ in range(warmup):
            await fn()
    for _ in range(rounds):
        for name, fn in (("bare", one_bare), ("litellm", one_litellm)):
            cpu = time.process_time()
            for _ in range(n):
                t0 = time.perf_counter()
                await fn()
                out[name].append((time.perf_counter() - t0) * 1000)
            out[f"{name}_cpu"] += time.process_time() - cpu
    if concurrent:  # against the second server (with latency), fresh clients
        bare = AsyncOpenAI(base_url=slow_url, api_key="sk-bench", max_retries=0, http_client=DefaultAioHttpClient())
        router = Router(
            model_list=[
                {
                    "model_name": "fake",
                    "litellm_params": {"model": "openai/fake-model", "api_base": slow_url, "api_key": "sk-bench"},
                }
            ],
            num_retries=0,
        )
        for _ in range(3):
            for name, fn in (("bare", one_bare), ("litellm", one_litellm)):
                t0 = time.perf_counter()
                await asyncio.gather(*[fn() for _ in range(concurrent)])
                out[f"{name}_wall"].append(time.perf_counter() - t0)
    await bare.close()
    out["versions"] = {"litellm": getattr(litellm, "__version__", ""), "openai": __import__("openai").__version__}
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--concurrent", type=int, default=0)
    parser.add_argument("--slow-url", default="", help="server with latency for the concurrent phase")
    args = parser.parse_args()
    result = asyncio.run(main(args.base_url, args.n, args.rounds, args.warmup, args.concurrent, args.slow_url))
    print(json.dumps(result))
