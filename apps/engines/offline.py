"""The offline engine: the knowledge base's best answer, or a polite apology handed to a human.

No LLM takes part, so it is always healthy; the engine manager falls back to it when nothing else
can be resolved."""

from django.conf import settings
from django.utils.translation import gettext as _

from apps.engines import adapters, metrics
from apps.engines.base import BaseEngine, EngineReply
from apps.engines.timing import Stopwatch

APOLOGY = "抱歉，这个问题我暂时无法准确回答，已为您转接人工客服，请稍候。"


def last_user_text(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


class OfflineEngine(BaseEngine):
    name = "offline"

    async def generate_response(
        self,
        messages: list[dict],
        conversation_id: int,
        personality_id: int | None = None,
        use_tools: bool | None = None,
        stream: bool | None = None,
    ) -> EngineReply:
        watch = Stopwatch()
        with watch.stage("retrieval"):
            hits = await adapters.knowledge_search(last_user_text(messages), k=1)
        best = hits[0] if hits else None
        if best is not None and best.answer and best.score >= settings.ENGINE_OFFLINE_MIN_SCORE:
            reply = EngineReply(
                content=best.answer,
                confidence=max(0.0, min(1.0, best.score)),
                engine=self.name,
                citations=[best.citation()],
                offline=True,
            )
        else:
            reply = EngineReply(
                content=APOLOGY,
                confidence=0.1,
                engine=self.name,
                offline=True,
                handoff=True,
                handoff_reason="no answer",
            )
        reply.latency_ms = watch.breakdown()
        metrics.observe_reply(reply)
        return reply

    async def get_engine_info(self) -> dict:
        return {
            "name": self.name,
            "title": _("离线应答（知识库）"),
            "version": "1",
            "models": [],
            "capabilities": ["knowledge"],
            "description": _("不调用大模型：回答知识库中最匹配的条目；没有把握时致歉并转人工。"),
        }

    async def health_check(self) -> dict:
        return {"ok": True, "detail": _("始终可用")}
