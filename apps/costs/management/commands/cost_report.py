import json
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from apps.costs.selectors import daily_report


class Command(BaseCommand):
    help = "LLM cost report for one day: cost, calls, average per call, budgets, per provider / model / agent."

    def add_arguments(self, parser):
        parser.add_argument("--date", help="YYYY-MM-DD (default: today)")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def handle(self, *args, **options):
        try:
            day = date.fromisoformat(options["date"]) if options["date"] else None
        except ValueError as exc:
            raise CommandError(f"--date must be YYYY-MM-DD: {exc}") from exc
        report = daily_report(day)
        if options["json"]:
            self.stdout.write(json.dumps(report, ensure_ascii=False, indent=2))
            return
        w = self.stdout.write
        w(f"LLM 成本日报 {report['date']}（来源 {report['source']}）")
        w(
            f"  费用 {report['total_cost']:.4f} 元   调用 {report['calls']} 次   平均 {report['avg_cost']:.6f} 元/次   "
            f"tokens 输入 {report['input_tokens']} 输出 {report['output_tokens']}"
        )
        if report["unpriced_calls"]:
            w(f"  未定价模型调用 {report['unpriced_calls']} 次（按默认价计 {report['unpriced_cost']:.4f} 元）")
        for b in report["budgets"]:
            w(
                f"  预算 {b['name']} [{b['scope']} {b['target'] or '*'} / {b['period']}]: {b['used']:.4f} / "
                f"{b['limit']:.2f} 元 = {b['used_pct']:.1f}%  策略 {b['policy']}"
            )
        for title, key in (("服务商", "by_provider"), ("模型", "by_model"), ("终端", "by_agent")):
            if report[key]:
                w(f"  按{title}:")
                for row in report[key]:
                    w(
                        f"    {row['name']:<40} {row['cost']:>12.4f} 元 {row['calls']:>8} 次 "
                        f"{row['avg_cost']:>10.6f} 元/次"
                    )
