"""Rules evaluation latency: the seeded defaults plus N extra rules, through `apps.rules.services.evaluate`.

    DATABASE_URL=postgres://… REDIS_URL=redis://… .venv/bin/python bench/rules_bench.py \
        [--extra-rules 100 --messages 5000]

The database gets the `seed_demo` rules and limits plus generated keyword / regex / chat / time-window
rules (bench rules are removed afterwards). Messages are a mix of private and group (@) chats, so
group messages also pay for the rate-limit counters in Redis (ADD + INCR per applicable limit);
private ones do not (the default limits apply to groups). Reports p50 / p95 / p99 per kind, wall and
CPU time of this thread, and the one-off compile time of the rule set.
"""

import argparse
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--extra-rules", type=int, default=100)
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    demo.seed(Quiet())
    rng = random.Random(3)
    Rule.objects.filter(name__startswith="bench-").delete()
    for i in range(args.extra_rules):
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
        Rule.objects.create(**row)
    try:
        t = time.perf_counter()
        ruleset = services.get_ruleset(force=True)
        compile_ms = (time.perf_counter() - t) * 1000
        start = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
        samples = {"private": ([], []), "group": ([], [])}
        actions = {}
        for n in range(args.messages):
            group = n % 2 == 1
            facts = MessageFacts(
                agent_id="bench",
                chat_name=f"群{n % 37}" if group else f"客户{n}",
                chat_type="group" if group else "private",
                sender=f"用户{n % 101}",
                content=rng.choice(TEXTS),
                is_at_me=True,
                received_at=start + timedelta(seconds=n),
            )
            t, c = time.perf_counter(), time.thread_time()
            decision = services.evaluate(facts)
            wall, cpu = samples["group" if group else "private"]
            cpu.append((time.thread_time() - c) * 1000)
            wall.append((time.perf_counter() - t) * 1000)
            actions[decision.action] = actions.get(decision.action, 0) + 1
        print(
            json.dumps(
                {
                    "load_average": os.getloadavg(),
                    "rules": len(ruleset.rules),
                    "rate_limits": len(ruleset.limits),
                    "compile_ms": round(compile_ms, 2),
                    "decisions": actions,
                    "private_ms": {"wall": stats(samples["private"][0]), "cpu": stats(samples["private"][1])},
                    "group_with_rate_limits_ms": {
                        "wall": stats(samples["group"][0]),
                        "cpu": stats(samples["group"][1]),
                    },
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    finally:
        Rule.objects.filter(name__startswith="bench-").delete()


if __name__ == "__main__":
    main()
