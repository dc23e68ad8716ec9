"""Mem0Engine: ChatEngine whose long-term memory is the `mem0ai` library's `Memory`.

mem0 extracts facts from each exchange with an LLM (a Chinese extraction instruction keeps them in
Chinese) and stores them with embeddings in a local Qdrant (path mode under settings.MEM0_DIR, no
server; set MEM0_QDRANT_URL to share one Qdrant server between several processes — the local path
can be opened by one process at a time). Its LLM and embedder are OpenAI-compatible clients pointed at
the gateway's configured provider for MEM0_LLM_ROUTE / MEM0_EMBEDDING_ROUTE (or MEM0_* overrides).

mem0's `Memory` API is blocking (sync OpenAI and Qdrant clients), so every call runs on a bounded
thread pool of MEM0_THREADS threads; adding the memories of an exchange happens after the reply,
off the reply's path. Memory ids are per contact: "<agent>:<chat>:<sender>". Telemetry is off.
"""

import asyncio
import functools
import hashlib
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.utils.translation import gettext as _

from apps.core import aio
from apps.engines import adapters, memory, metrics
from apps.engines import facts as fact_rules
from apps.engines.base import EngineReply
from apps.engines.chat import ChatEngine, TurnContext

# mem0 reads these when it is imported.
os.environ["MEM0_TELEMETRY"] = "False"
os.environ.setdefault("MEM0_DIR", str(settings.MEM0_DIR))

logger = logging.getLogger(__name__)

FACT_EXTRACTION_INSTRUCTIONS = (
    "你在为一家电动汽车充电桩企业的微信客服记录客户的长期记忆。\n"
    "1. 所有记忆一律用简体中文书写，保留型号、编号、地址、人名原文，不要翻译成英文。\n"
    "2. 只记录对以后服务有用的事实：车型、充电桩型号与编号、安装地址、故障与报修情况、订单/合同、"
    "偏好的联系时间与方式、已承诺的事项。\n"
    "3. 寒暄、客服自己的话术、一次性的情绪不要记录。\n"
    "4. 每条记忆是一句完整、独立可读的陈述，例如“客户的充电桩型号是 ACX-7，安装在重庆渝北区”。"
)
MAX_PENDING_ADDS = 200


@dataclass(frozen=True)
class Mem0Settings:
    base_url: str
    api_key: str
    llm_model: str
    embedding_base_url: str
    embedding_api_key: str
    embedding_model: str
    dims: int
    directory: str
    qdrant_url: str

    @property
    def collection(self) -> str:
        slug = re.sub(r"[^a-zA-Z0-9]+", "_", self.embedding_model).strip("_").lower()
        return f"wxcs_{slug}_{self.dims}"

    def as_mem0_config(self) -> dict:
        store = {"collection_name": self.collection, "embedding_model_dims": self.dims}
        if self.qdrant_url:
            store["url"] = self.qdrant_url
        else:
            store.update(path=os.path.join(self.directory, "qdrant"), on_disk=True)
        return {
            "vector_store": {"provider": "qdrant", "config": store},
            "llm": {
                "provider": "openai",
                "config": {"model": self.llm_model, "api_key": self.api_key, "openai_base_url": self.base_url},
            },
            "embedder": {
                "provider": "openai",
                "config": {
                    "model": self.embedding_model,
                    "api_key": self.embedding_api_key,
                    "openai_base_url": self.embedding_base_url,
                    "embedding_dims": self.dims,
                },
            },
            "history_db_path": os.path.join(self.directory, "history.db"),
            "custom_instructions": FACT_EXTRACTION_INSTRUCTIONS,
        }


class Mem0NotConfigured(Exception):
    pass


_probed_dims: dict[tuple[str, str], int] = {}


async def _probe_dims(base_url: str, api_key: str, model: str) -> int:
    """The embedding model's dimension, asked once per endpoint and model (MEM0_EMBEDDING_DIMS=0)."""
    known = _probed_dims.get((base_url, model))
    if known:
        return known
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=10, max_retries=1) as client:
        response = await client.embeddings.create(model=model, input=["维度探测"])
    dims = _probed_dims[(base_url, model)] = len(response.data[0].embedding)
    return dims


async def resolve_settings() -> Mem0Settings:
    """mem0's endpoints: MEM0_* settings first, else the gateway's provider for the configured routes."""
    llm = await adapters.gateway_route(settings.MEM0_LLM_ROUTE)
    embedder = await adapters.gateway_route(settings.MEM0_EMBEDDING_ROUTE)
    base_url = settings.MEM0_BASE_URL or (llm or {}).get("api_base", "")
    api_key = settings.MEM0_API_KEY or (llm or {}).get("api_key", "") or "none"
    llm_model = settings.MEM0_LLM_MODEL or (llm or {}).get("model", "")
    embedding_base_url = settings.MEM0_BASE_URL or (embedder or {}).get("api_base", "") or base_url
    embedding_api_key = settings.MEM0_API_KEY or (embedder or {}).get("api_key", "") or api_key
    embedding_model = settings.MEM0_EMBEDDING_MODEL or (embedder or {}).get("model", "")
    missing = [
        name
        for name, value in (("LLM 地址", base_url), ("LLM 模型", llm_model), ("向量模型", embedding_model))
        if not value
    ]
    if missing:
        raise Mem0NotConfigured(
            "记忆引擎缺少配置：" + "、".join(missing) + "（请在大模型网关配置服务商，或设置 MEM0_*）"
        )
    dims = settings.MEM0_EMBEDDING_DIMS or await _probe_dims(embedding_base_url, embedding_api_key, embedding_model)
    return Mem0Settings(
        base_url=base_url,
        api_key=api_key,
        llm_model=llm_model,
        embedding_base_url=embedding_base_url,
        embedding_api_key=embedding_api_key,
        embedding_model=embedding_model,
        dims=dims,
        directory=str(settings.MEM0_DIR),
        qdrant_url=settings.MEM0_QDRANT_URL,
    )


def serialize_client(client) -> None:
    """Make a local (path mode) Qdrant client safe for mem0's thread pool: its collections and SQLite
    persistence have no locks, so every public method runs under one lock. Methods are wrapped on the
    instance, which stays a QdrantClient (mem0 shares it with its entity store)."""
    lock = threading.RLock()

    def locked(method):
        @functools.wraps(method)
        def call(*args, **kwargs):
            with lock:
                return method(*args, **kwargs)

        return call

    for name in dir(type(client)):
        if not name.startswith("_") and callable(getattr(type(client), name, None)):
            setattr(client, name, locked(getattr(client, name)))


def close_memory(mem) -> None:
    """Release a mem0 Memory, including the local Qdrant's lock on its folder (Memory.close keeps it)."""
    mem.close()
    client = getattr(getattr(mem, "vector_store", None), "client", None)
    if client is not None:
        client.close()


def _store_in_use_elsewhere(exc: Exception) -> bool:
    return isinstance(exc, RuntimeError) and "already accessed by another instance" in str(exc)


def contact_key(agent_id: str, chat_name: str, contact: str) -> str:
    return f"{agent_id}:{chat_name}:{contact}"


class Mem0Engine(ChatEngine):
    name = "mem0"
    version = "1"

    def __init__(self):
        self._executor = ThreadPoolExecutor(max_workers=settings.MEM0_THREADS, thread_name_prefix="mem0")
        self._lock = threading.Lock()
        self._memory = None
        self._memory_settings: Mem0Settings | None = None
        self._pending: set[asyncio.Task] = set()

    # --- mem0 on its thread pool -----------------------------------------------------------------
    def _get_memory(self, wanted: Mem0Settings):
        """The process's mem0 Memory, rebuilt when the provider configuration changed. Blocking."""
        with self._lock:
            if self._memory is None or wanted != self._memory_settings:
                from mem0 import Memory

                os.makedirs(wanted.directory, exist_ok=True)
                if self._memory is not None:
                    close_memory(self._memory)
                    self._memory = None
                self._memory = Memory.from_config(wanted.as_mem0_config())
                if not wanted.qdrant_url:
                    serialize_client(self._memory.vector_store.client)
                self._memory_settings = wanted
            return self._memory

    async def _run(self, function, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: function(*args, **kwargs))

    def _search_sync(self, conf: Mem0Settings, user_id: str, query: str, limit: int) -> list[dict]:
        found = self._get_memory(conf).search(query, top_k=limit, filters={"user_id": user_id})
        return found.get("results", []) if isinstance(found, dict) else list(found)

    def _add_sync(self, conf: Mem0Settings, user_id: str, exchange: list[dict]) -> list[dict]:
        """mem0 extracts and stores the facts; one that reads as an instruction is deleted at once."""
        mem = self._get_memory(conf)
        added = mem.add(exchange, user_id=user_id)
        kept = []
        for item in added.get("results", []) if isinstance(added, dict) else list(added):
            if item.get("event", "ADD") in ("ADD", "UPDATE") and fact_rules.refused(
                str(item.get("memory", "")), "mem0"
            ):
                mem.delete(item["id"])
            else:
                kept.append(item)
        return kept

    async def search_memories(self, user_id: str, query: str, limit: int | None = None) -> list[dict]:
        """mem0 `Memory.search` for one contact: [{"memory", "score", ...}], best first."""
        conf = await resolve_settings()
        return await self._run(self._search_sync, conf, user_id, query, limit or settings.ENGINE_MEMORY_MAX_FACTS)

    async def add_memories(self, user_id: str, exchange: list[dict], conversation_id: int | None = None) -> list[dict]:
        """mem0 `Memory.add` (LLM fact extraction + embeddings) for one contact; returns what was stored.
        An exchange whose customer message reads as an instruction is not memorised at all, and an
        extracted fact that does is deleted (facts.refused). The conversation's cached retrievals are
        dropped, so its next reply recalls the new facts."""
        said = [str(message.get("content", "")) for message in exchange if message.get("role") == "user"]
        if any(fact_rules.refused(text, "mem0") for text in said):
            return []
        added = await self._run(self._add_sync, await resolve_settings(), user_id, exchange)
        if conversation_id is not None:
            await memory.invalidate_memory(conversation_id)
        return added

    async def flush(self) -> None:
        """Wait for the background adds scheduled so far (tests, shutdown)."""
        pending = list(self._pending)
        if pending:
            await asyncio.wait(pending)

    # --- ChatEngine hooks ------------------------------------------------------------------------
    async def recall_facts(self, turn: TurnContext) -> list[str]:
        if turn.conversation is None or not turn.sender:
            return await super().recall_facts(turn)
        user_id = contact_key(turn.conversation.agent_id, turn.conversation.chat_name, turn.sender)
        lookup, limit = f"{user_id}\x00{turn.query}", settings.ENGINE_MEMORY_MAX_FACTS
        cached, version = await memory.memory_cache.get(turn.conversation_id, "mem0", lookup, limit)
        if cached is not None:
            metrics.CACHE.labels("mem0", "hit").inc()
            turn.cache_hits["long_term"] = 1
            return cached
        metrics.CACHE.labels("mem0", "miss").inc()
        turn.cache_hits["long_term"] = 0
        try:
            results = await self.search_memories(user_id, turn.query)
        except Exception:
            logger.exception("mem0 search failed; using the contact's stored facts")
            return await super().recall_facts(turn)
        facts = [str(item.get("memory", "")) for item in results if item.get("memory")]
        await memory.memory_cache.set(turn.conversation_id, "mem0", lookup, limit, version, facts)
        return facts

    async def after_reply(self, turn: TurnContext, reply: EngineReply) -> None:
        await super().after_reply(turn, reply)
        if turn.conversation is None or not turn.sender or reply.offline or not turn.query:
            return
        if len(self._pending) >= MAX_PENDING_ADDS:
            logger.warning("mem0: %s adds pending; this exchange is not memorised", len(self._pending))
            return
        user_id = contact_key(turn.conversation.agent_id, turn.conversation.chat_name, turn.sender)
        exchange = [
            {"role": "user", "content": turn.query, "name": turn.sender},
            {"role": "assistant", "content": reply.content},
        ]
        task = aio.spawn(self._memorise(user_id, exchange, turn.conversation_id), what="mem0 add")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _memorise(self, user_id: str, exchange: list[dict], conversation_id: int) -> None:
        """Off the reply's path: a failure is logged (with the contact hashed), never raised."""
        try:
            await self.add_memories(user_id, exchange, conversation_id)
        except Exception:
            logger.exception(
                "mem0 add failed for %s", hashlib.sha1(user_id.encode(), usedforsecurity=False).hexdigest()
            )

    # --- info / health ----------------------------------------------------------------------------
    async def get_engine_info(self) -> dict:
        info = await super().get_engine_info()
        try:
            conf = await resolve_settings()
            store = conf.qdrant_url or os.path.join(conf.directory, "qdrant")
            models = {"llm": conf.llm_model, "embedding": conf.embedding_model, "dims": conf.dims}
        except Exception as exc:
            store, models = str(settings.MEM0_DIR), {"error": str(exc)}
        from importlib.metadata import version

        info.update(
            name=self.name,
            title=_("记忆引擎（Mem0Engine）"),
            version=self.version,
            library=f"mem0ai {version('mem0ai')}",
            vector_store=f"qdrant {store}",
            models=models,
            memory=_("最近对话 + 滚动摘要（同对话引擎）+ mem0 长期记忆（自动抽取中文事实），检索结果缓存于 Redis"),
        )
        return info

    def _check_store_sync(self, conf: Mem0Settings) -> str:
        """Search mem0's store. A process that does not hold it yet (e.g. the web process checking
        before a switch) opens it only for the check: the local Qdrant folder admits one process."""
        if self._memory is not None:
            self._search_sync(conf, "health-check", "健康检查", 1)
            return "mem0 向量库正常"
        from mem0 import Memory

        os.makedirs(conf.directory, exist_ok=True)
        try:
            probe = Memory.from_config(conf.as_mem0_config())
        except RuntimeError as exc:
            if _store_in_use_elsewhere(exc):
                return "mem0 本地向量库正由另一个进程（worker）使用"
            raise
        try:
            probe.search("健康检查", top_k=1, filters={"user_id": "health-check"})
        finally:
            close_memory(probe)
        return "mem0 向量库正常"

    async def health_check(self) -> dict:
        """The chat model answers (ChatEngine's check) and mem0's embedder and store work."""
        chat = await super().health_check()
        if not chat["ok"]:
            return chat
        try:
            detail = await self._run(self._check_store_sync, await resolve_settings())
        except Exception as exc:
            return {"ok": False, "detail": f"mem0 不可用：{exc.__class__.__name__}: {exc}"}
        return {"ok": True, "detail": f"{chat['detail']}；{detail}"}
