"""CPU of one decision in-process (the worker's code, no Celery, no web), back to back and with idle gaps.

    .venv/bin/python bench/decision_cpu.py [--messages 1000] [--gaps 0 0.001 0.01]

Stores `--messages` customer questions from the EV-charger FAQ (each in its own conversation), then decides them
one at a time with `apps.messages.pipeline.handle` on one event loop, the offline engine answering, and reports
the process CPU per decision, excluding the gaps. With a gap between decisions the same work costs more: the
machine charges sporadic work (caches and the CPU go cold), which is why the pipeline's CPU per message falls as
the message rate rises (bench/README.md, issue 14).
"""

import argparse
import asyncio
import time

from pipeline_common import prepare


async def decide_all(entries, gap: float) -> float:
    from apps.messages import pipeline

    cpu = 0.0
    for entry in entries:
        if gap:
            await asyncio.sleep(gap)
        started = time.process_time()
        await pipeline.handle(entry)
        cpu += time.process_time() - started
    return cpu


async def stored_entries(agent_id: str, texts: list[str], n: int) -> list:
    from apps.messages import queue
    from apps.messages.store import store
    from apps.messages.validation import validate

    stamp = time.time_ns()
    items = [
        validate({"id": f"d{stamp}-{i}", "chat_name": f"客户{i}", "sender": "客户", "content": texts[i % len(texts)]})
        for i in range(n)
    ]
    accepted = []
    for start in range(0, n, 50):
        accepted += await store().insert_messages(agent_id, items[start : start + 50])
    return [queue.Entry(a.message_id, a.conversation_id) for a in accepted]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--gaps", type=float, nargs="+", default=[0.0, 0.001, 0.01])
    args = parser.parse_args()
    prepare()
    from django.conf import settings

    settings.REVIEW_CONFIDENCE_THRESHOLD = 0.0
    settings.ENGINE_DEFAULT = "offline"
    from pipeline_overhead import questions

    from apps.agents.services import create_agent

    texts = questions()
    agent, _ = create_agent(f"decision-cpu-{time.time_ns()}")

    async def run() -> None:
        await decide_all(await stored_entries(agent.id, texts, 50), 0)  # warm: index, pools, caches
        for gap in args.gaps:
            cpu = await decide_all(await stored_entries(agent.id, texts, args.messages), gap)
            print(f"gap {gap * 1000:g} ms: {cpu * 1000 / args.messages:.2f} ms CPU per decision")

    asyncio.run(run())


if __name__ == "__main__":
    main()
