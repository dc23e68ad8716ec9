"""The engines bench/llm_concurrency.py makes the default: one gateway `complete()` per message, nothing else,
so the run measures the worker + gateway, not retrieval or tools. Registered with the engine manager when
imported (the bench's workers: `celery worker --include bench.llm_concurrency_engine`)."""

from apps.engines.base import BaseEngine, EngineReply
from apps.engines.manager import register_engine
from apps.llm_gateway.services import complete


class GatewayEngine(BaseEngine):
    name = "gateway-bench"

    async def generate_response(self, messages, conversation_id, personality_id=None, use_tools=None, stream=None):
        c = await complete(messages, route="default", user={"agent": "bench", "customer": str(conversation_id)})
        return EngineReply(
            content=c.content,
            confidence=0.9,
            engine=self.name,
            model=c.model,
            provider=c.provider,
            input_tokens=c.usage.input_tokens,
            output_tokens=c.usage.output_tokens,
            cost=c.cost,
            latency_ms={"llm": c.latency_ms},
            offline=c.offline,
            tool_calls=[
                {"name": f"attempt:{a.provider}/{a.model}", "arguments": a.error[:200], "ok": a.outcome}
                for a in c.attempts
                if a.outcome != "ok"
            ],
        )

    async def get_engine_info(self):
        return {"name": self.name}

    async def health_check(self):
        return {"ok": True, "detail": ""}


class SleepEngine(GatewayEngine):
    """The same reply after the same wait, without the gateway or HTTP: the pipeline's own share."""

    name = "sleep-bench"

    async def generate_response(self, messages, conversation_id, personality_id=None, use_tools=None, stream=None):
        import asyncio
        import os

        await asyncio.sleep(float(os.environ.get("BENCH_SLEEP_LATENCY", "2")))
        return EngineReply(content="好的", confidence=0.9, engine=self.name, model="none", provider="none")


register_engine(GatewayEngine.name, GatewayEngine)
register_engine(SleepEngine.name, SleepEngine)
