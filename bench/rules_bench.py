"""Rules evaluation latency: the seeded defaults plus N extra rules, through `apps.rules.services.evaluate`.

    DATABASE_URL=postgres://… REDIS_URL=redis://… .venv/bin/python bench/rules_bench.py \
        [--extra-rules 100 --messages 5000]

The database gets the `seed_demo` rules and limits plus generated keyword / regex / chat / time-window
rules (bench rules are removed afterwards). Messages are a mix of private and group (@) chats, so
group messages also pay for the rate-limit counters in Redis (one script call counting every applicable
limit); private ones do not (the default limits apply to groups). `await evaluate(facts)` runs
on one event loop, as the message pipeline calls it: one message at a time (p50 / p95 / p99 per kind,
wall and CPU time of the loop's thread), then batches of group messages decided at once (their
counters share one Redis pipeline per loop turn). Also the one-off compile time of the rule set.
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wxcs.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from apps.rules import demo, services  # noqa: E402
from apps.rules.models import Rule  # noqa: E402
from apps.rules.types import MessageFacts  # noqa: E402

WORDS = "安装 质保 报警 功率 移机 联网 刷卡 预约 漏保 快充 慢充 发票 退款 物流 订单 维修 上门 价格 优惠 活动".split()
TEXTS = [
    "你好",
    "在吗",
    "我要转人工",
    "充电桩质保多久",
    "E01 报警怎么办",
    "你们的报价是多少",
    "订单 A123456 到哪了",
    "安装需要物业同意吗",
    "家里只有220伏能装吗",
    "快充和慢充有什么区别",
    "漏保老是跳闸",
    "谢谢",
]


class Quiet:
    def write(self, *args, **kwargs):
        pass


def stats(samples):
    ordered = sorted(samples)

    def pct(p):
        return round(ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))], 4)

    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 4),
        "p95": pct(95),
        "p99": pct(99),
        "max": round(ordered[-1], 4),
    }


def add_bench_rules(count: int, rng: random.Random) -> None:
    for i in range(count):
        kind = i % 4
        row = {
            "name": f"bench-{i}",
            "priority": 100 + i,
            "action": rng.choice(["reply", "tag", "handoff"]),
            "reply_templates": "自动回复 {sender}",
            "tags": "bench",
            "stop": kind == 0,
        }
        if kind == 0:
            row["keywords"] = "\n".join(rng.sample(WORDS, 2)) + f"\n不会出现的词{i}"
        elif kind == 1:
            row["regex"] = rf"(订单|单号)\s*[A-Z]\d{{{rng.randint(5, 8)}}}|不会出现{i}"
        elif kind == 2:
            row.update(chat_type="group", chat_names=f"群{i}*", keywords=rng.choice(WORDS))
        else:
            row.update(
                time_start=dtime(rng.randint(0, 23)),
                time_end=dtime(rng.randint(0, 23)),
                weekdays="135",
                keywords=f"{rng.choice(WORDS)}\n{rng.choice(WORDS)}",
                keyword_mode="all",
            )
        services.save_rule_config(Rule(**row))


def message(n: int, rng: random.Random, start: datetime) -> MessageFacts:
    group = n % 2 == 1
    return MessageFacts(
        agent_id="bench",
        chat_name=f"群{n % 37}" if group else f"客户{n}",
        chat_type="group" if group else "private",
        sender=f"用户{n % 101}",
        content=rng.choice(TEXTS),
        is_at_me=True,
        received_at=start + timedelta(seconds=n),
    )


async def one_at_a_time(count: int, rng: random.Random) -> tuple[dict, dict]:
    start = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    samples = {"private": ([], []), "group": ([], [])}
    actions: dict[str, int] = {}
    await services.evaluate(message(0, rng, start))  # loads the rule set (this process's first read)
    for n in range(count):
        facts = message(n, rng, start)
        t, c = time.perf_counter(), time.thread_time()
        decision = await services.evaluate(facts)
        wall, cpu = samples[facts.chat_type]
        cpu.append((time.thread_time() - c) * 1000)
        wall.append((time.perf_counter() - t) * 1000)
        actions[decision.action] = actions.get(decision.action, 0) + 1
    return samples, actions


async def at_once(count: int, batch: int, rng: random.Random) -> dict:
    """Group messages decided `batch` at a time (one gather): throughput when the pipeline is busy."""
    start = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    facts = [message(2 * n + 1, rng, start) for n in range(count)]
    t = time.perf_counter()
    for first in range(0, count, batch):
        await asyncio.gather(*(services.evaluate(f) for f in facts[first : first + batch]))
    wall = time.perf_counter() - t
    return {
        "messages": count,
        "batch": batch,
        "wall_s": round(wall, 3),
        "per_message_ms": round(wall / count * 1000, 4),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--extra-rules", type=int, default=100)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    demo.seed(Quiet())
    rng = random.Random(3)
    services.delete_rule_config(Rule.objects.filter(name__startswith="bench-"))
    add_bench_rules(args.extra_rules, rng)
    try:
        t = time.perf_counter()
        ruleset = services.compile_ruleset("bench")
        compile_ms = (time.perf_counter() - t) * 1000
        samples, actions = asyncio.run(one_at_a_time(args.messages, rng))
        concurrent = asyncio.run(at_once(args.messages // 2, args.batch, rng))
        report = {
            "load_average": os.getloadavg(),
            "rules": len(ruleset.rules),
            "rate_limits": len(ruleset.limits),
            "compile_ms": round(compile_ms, 2),
            "decisions": actions,
            "private_ms": {"wall": stats(samples["private"][0]), "cpu": stats(samples["private"][1])},
            "group_with_rate_limits_ms": {"wall": stats(samples["group"][0]), "cpu": stats(samples["group"][1])},
            "group_messages_decided_at_once": concurrent,
        }
        print(json.dumps(report, ensure_ascii=False, indent=2))
    finally:
        services.delete_rule_config(Rule.objects.filter(name__startswith="bench-"))


if __name__ == "__main__":
    main()
