"""Knowledge retrieval latency over 10,000 entries: keyword-only and hybrid, through the real search path.

    DATABASE_URL=postgres://… REDIS_URL=redis://… .venv/bin/python bench/retrieval_bench.py \
        [--entries 10000 --queries 500]

What runs:
- 10,000 entries: the 61-entry EV-charger FAQ plus generated Chinese Q&A of the same shape (models,
  cities, alarm codes, topics), each with a 256-dimension vector made by the loopback server's own
  embedding function (the same vectors the server returns, without 10,000 HTTP calls);
- the index is built in process with the FAQ's synonyms and custom words (build time is printed) and
  becomes what this process's versioned index loads, so queries go through
  `apps.knowledge.services.search` unchanged: version check against Redis (at most every
  KNOWLEDGE_VERSION_CHECK_MS), tokenisation, BM25 postings, NumPy matrix product, fusion, top-k;
  on one event loop, as the engines call it, and once through `apps.core.aio.run` as admin does;
- hybrid queries embed the question through the real gateway (`apps.llm_gateway.services.embed`,
  route "embedding": circuit breaker, budget and usage in Redis) against the loopback
  OpenAI-compatible server in its own process, with no artificial latency. Every query text is
  distinct, so the per-process query-vector cache never answers; a last run repeats them to show
  the cached case.
Reports p50 / p95 / p99 / max per path, and rank-bm25's get_scores on the same corpus for comparison.
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wxcs.settings")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from apps.core import aio  # noqa: E402
from apps.knowledge import demo, services  # noqa: E402
from apps.knowledge.index import IndexEntry, RetrievalIndex  # noqa: E402
from apps.knowledge.text import Analyzer, parse_synonym_line  # noqa: E402
from apps.llm_gateway.testing import embed_text, fake_openai, reset_gateway  # noqa: E402

CITIES = "北京 上海 广州 深圳 杭州 成都 武汉 西安 南京 苏州 重庆 天津 长沙 郑州 青岛 合肥 厦门 宁波 昆明 大连".split()
MODELS = [
    f"{s}{n}" for s in ("星充", "易桩", "能源", "快能", "绿驰") for n in ("A7", "A11", "B22", "C30", "D60", "E120")
]
TOPICS = [
    ("安装", "需要物业同意和固定车位，工程师上门勘测后施工，线缆{n}米以内免费。"),
    ("质保", "整桩质保{n}年，充电枪质保1年，人为损坏不在质保范围。"),
    ("报警码E{code:02d}", "出现报警码E{code:02d}时请先断电重启，仍未恢复请联系售后检测模块。"),
    ("功率", "额定功率{n}kW，实际功率取决于车载充电机和电压。"),
    ("移机", "搬家移机按次收费，新地址需重新勘测，线缆另计。"),
    ("联网", "支持WiFi和4G联网，离线时可以刷卡或即插即充。"),
    ("固件升级", "支持OTA远程升级，升级约{n}分钟，期间不要断电。"),
    ("漏电保护", "前端需安装A型30mA漏电保护开关，跳闸时检查线路绝缘。"),
    ("刷卡", "刷卡启动充电，卡片丢失请在App里解绑并补办。"),
    ("OCPP对接", "支持OCPP 1.6J，可对接第三方运营平台，在配置页填写平台地址。"),
    ("预约充电", "在App设置预约时段，谷电时段充电更省钱。"),
    ("售后上门", "市区{n}小时内上门，郊区72小时内上门。"),
]
ASKS = ["怎么办", "是什么意思", "怎么处理", "需要多久", "有什么要求", "怎么收费", "可以吗", "注意什么"]


def generate(n: int, faq: list[dict], seed: int = 7) -> list[IndexEntry]:
    rng = random.Random(seed)
    entries = [
        IndexEntry(id=i + 1, question=r["question"], answer=r["answer"], document="FAQ", section=r["section"])
        for i, r in enumerate(faq)
    ]
    while len(entries) < n:
        i = len(entries) + 1
        topic, answer = rng.choice(TOPICS)
        code, num = rng.randint(1, 30), rng.randint(2, 60)
        topic = topic.format(code=code)
        question = f"{rng.choice(CITIES)}{rng.choice(MODELS)}充电桩{topic}{rng.choice(ASKS)}？"
        text = answer.format(n=num, code=code) + f"适用于{rng.choice(MODELS)}型号，第{i}号条目。"
        entries.append(IndexEntry(id=i, question=question, answer=text, document="generated", section=topic))
    for entry in entries:
        entry.embedding = np.asarray(embed_text(f"{entry.question}\n{entry.answer}"), dtype=np.float32)
    return entries


def queries(n: int, seed: int = 11) -> list[str]:
    data_dir = ROOT / "apps" / "knowledge" / "tests" / "data"
    texts = []
    for name in ("faq_paraphrases.json", "faq_holdout.json"):
        data = json.loads((data_dir / name).read_text(encoding="utf-8"))
        texts += [t for k, v in data.items() if not k.startswith("_") for t in v]
    rng = random.Random(seed)
    out = list(dict.fromkeys(texts))
    while len(out) < n:
        topic = rng.choice(TOPICS)[0].format(code=rng.randint(1, 30))
        out.append(f"我在{rng.choice(CITIES)}，{rng.choice(MODELS)}的{topic}{rng.choice(ASKS)}（{len(out)}）")
    return out[:n]


def stats(samples: list[float]) -> dict:
    ordered = sorted(samples)

    def pct(p):
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 3),
        "p95": round(pct(95), 3),
        "p99": round(pct(99), 3),
        "max": round(ordered[-1], 3),
    }


def build(args) -> tuple[Analyzer, list[IndexEntry], RetrievalIndex, dict]:
    dictionary = demo.load_dictionary()
    analyzer = Analyzer(dictionary["custom_words"], [parse_synonym_line(s) for s in dictionary["synonyms"]])
    analyzer.tokens("预热")  # jieba's dictionary load (once per process) is not part of the build figure
    t = time.perf_counter()
    entries = generate(args.entries, demo.load_faq()["entries"])
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    index = RetrievalIndex(entries, analyzer, embedding_model="fake-embedding", version="bench")
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    RetrievalIndex(entries, analyzer, embedding_model="fake-embedding", version="bench")
    rebuild_s = time.perf_counter() - t  # after an edit: token lists of unchanged entries are reused
    timings = {
        "generate_s": round(gen_s, 2),
        "index_build_s": round(build_s, 2),
        "index_rebuild_after_edit_s": round(rebuild_s, 2),
    }
    return analyzer, entries, index, timings


async def timed(name: str, texts: list[str], results: dict, *, hybrid: bool) -> None:
    """`search` for each text on this event loop: wall and CPU time of this (the loop's) thread."""
    await services.search("预热一下" + name, hybrid=hybrid)  # warm-up (clients, connections)
    wall, cpu, embed, paths, empty = [], [], [], set(), 0
    for text in texts:
        t0, c0 = time.perf_counter(), time.thread_time()
        result = await services.search(text, k=5, hybrid=hybrid)
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - t0) * 1000)
        embed.append(result.embed_ms)
        paths.add(result.path)
        empty += not result.hits
    results[name] = {
        "wall": stats(wall),
        "cpu_this_thread": stats(cpu),
        "paths": sorted(paths),
        "queries_without_hits": empty,
    }
    if hybrid:
        results[name]["of_which_query_embedding_wall"] = stats(embed)


async def run_searches(qs: list[str], results: dict) -> None:
    await timed("keyword-only", qs, results, hybrid=False)
    services._query_vectors.clear()
    await timed("hybrid, end to end (query embedded through the gateway)", qs, results, hybrid=True)
    await timed("hybrid, in-process retrieval (query vector already known)", qs, results, hybrid=True)


def bridged(qs: list[str], results: dict) -> None:
    """Sync callers (admin's 试一试, commands) reach `search` through the shared loop: the hop's cost."""
    wall = []
    for text in qs:
        t0 = time.perf_counter()
        aio.run(services.search(text, k=5, hybrid=False))
        wall.append((time.perf_counter() - t0) * 1000)
    results["keyword-only, from sync code through apps.core.aio.run"] = {"wall": stats(wall)}


def rank_bm25_baseline(analyzer: Analyzer, entries: list[IndexEntry], qs: list[str], results: dict) -> None:
    from rank_bm25 import BM25Okapi

    bm25 = BM25Okapi([analyzer.tokens(f"{e.question} {e.answer}") for e in entries])
    samples = []
    for text in qs[:50]:
        tokens = analyzer.tokens(text)
        t0 = time.perf_counter()
        bm25.get_scores(tokens)
        samples.append((time.perf_counter() - t0) * 1000)
    results["for comparison: rank-bm25 BM25Okapi.get_scores alone"] = {"wall": stats(samples)}


def use_loopback_embeddings(server) -> None:
    settings.LLM_PROVIDERS = {
        "custom": {"api_base": server.base_url, "api_key": server.api_key, "model": "fake-model", "timeout": 5.0}
    }
    settings.LLM_ROUTES = {"embedding": [{"provider": "custom", "model": "fake-embedding"}]}
    reset_gateway()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    analyzer, entries, index, timings = build(args)
    # This process's index is the generated one (not the database's): what INDEX loads on its next read.
    services.INDEX.forget()
    services.INDEX._load = lambda version: index
    qs = queries(args.queries)
    results: dict[str, dict] = {}
    with fake_openai(subprocess=True) as server:
        use_loopback_embeddings(server)
        asyncio.run(run_searches(qs, results))
        bridged(qs, results)
    rank_bm25_baseline(analyzer, entries, qs, results)
    report = {
        "load_average": os.getloadavg(),
        "entries": index.size,
        "vector_dim": index.dim,
        **timings,
        "version_check_ms": settings.KNOWLEDGE_VERSION_CHECK_MS,
        "results_ms": results,
    }
    print(json.dumps(report, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
