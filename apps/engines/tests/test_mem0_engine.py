"""Mem0Engine: ChatEngine with mem0's long-term memory (LLM fact extraction, embeddings, a local Qdrant)."""

import asyncio
import json

from asgiref.sync import sync_to_async

from apps.engines import memory
from apps.engines.chat import ChatEngine
from apps.engines.mem0_engine import Mem0Engine, contact_key
from apps.engines.timing import STAGES

from .test_chat_engine import chat_requests


async def test_mem0_add_then_search_returns_the_fact(server, world):
    fact = "客户的车是比亚迪汉 EV，充电桩安装在重庆渝北区的地下车库"
    server.rule({"content": json.dumps({"memory": [{"id": "0", "text": fact}]}, ensure_ascii=False)}, model="fake-mem0")
    engine = Mem0Engine()
    user_id = contact_key(world.agent_id, "张三", "张三")
    exchange = [
        {"role": "user", "content": "我开比亚迪汉，桩装在渝北的地下车库"},
        {"role": "assistant", "content": "好的，已记下。"},
    ]

    added = await engine.add_memories(user_id, exchange)
    found = await engine.search_memories(user_id, "客户的车型和安装地址")

    assert [item["memory"] for item in added] == [fact]
    assert found and found[0]["memory"] == fact
    assert await engine.search_memories("someone-else", "车型") == []
    extraction = [r["body"] for r in server.requests(path="chat") if r["model"] == "fake-mem0"]
    assert "简体中文" in extraction[0]["messages"][-1]["content"]  # our Chinese extraction instructions
    assert server.requests(path="embeddings")


async def test_mem0_memories_reach_the_next_prompt(server, world):
    fact = "客户的充电桩型号是 ACX-7"
    server.rule({"content": json.dumps({"memory": [{"id": "0", "text": fact}]}, ensure_ascii=False)}, model="fake-mem0")
    engine = Mem0Engine()
    first = [{"role": "user", "content": "我家的桩是 ACX-7 型号", "name": world.sender}]
    await engine.generate_response(first, world.conversation.pk)
    await engine.flush()

    second = [{"role": "user", "content": "我的充电桩型号是什么来着", "name": world.sender}]
    await engine.generate_response(second, world.conversation.pk)

    system_prompt = chat_requests(server)[-1]["messages"][0]["content"]
    assert fact in system_prompt


async def test_mem0_recall_is_cached_until_the_conversation_changes(server, world):
    from apps.engines.chat import TurnContext
    from apps.engines.timing import Stopwatch

    fact = "客户的充电桩型号是 ACX-7"
    server.rule({"content": json.dumps({"memory": [{"id": "0", "text": fact}]}, ensure_ascii=False)}, model="fake-mem0")
    engine = Mem0Engine()
    await engine.add_memories(contact_key(world.agent_id, "张三", "张三"), [{"role": "user", "content": "桩是 ACX-7"}])
    message = [{"role": "user", "content": "我的桩什么型号", "name": world.sender}]

    turns: list[TurnContext] = []
    for _ in range(2):
        turns.append(await engine.prepare(message, world.conversation.pk, None, Stopwatch()))
    searches = len(server.requests(path="embeddings"))
    assert [turn.facts for turn in turns] == [[fact], [fact]]
    assert [turn.cache_hits for turn in turns] == [{"memory": 0, "long_term": 0}, {"memory": 1, "long_term": 1}]

    await memory.invalidate_memory(world.conversation.pk)
    again = await engine.prepare(message, world.conversation.pk, None, Stopwatch())
    assert again.cache_hits == {"memory": 0, "long_term": 0}
    assert len(server.requests(path="embeddings")) > searches  # mem0 searched again


async def test_mem0_local_store_takes_concurrent_adds_and_searches(server, world):
    server.rule(
        {"content": json.dumps({"memory": [{"id": "0", "text": "客户偏好晚上联系"}]}, ensure_ascii=False)},
        model="fake-mem0",
    )
    engine = Mem0Engine()
    users = [f"agent-1:群聊:客户{number}" for number in range(8)]
    exchange = [{"role": "user", "content": "晚上再联系我"}]

    added = await asyncio.gather(*(engine.add_memories(user, exchange) for user in users))
    found = await asyncio.gather(*(engine.search_memories(user, "什么时候联系") for user in users * 2))

    assert all(items and items[0]["memory"] == "客户偏好晚上联系" for items in added)
    assert all(items and items[0]["memory"] == "客户偏好晚上联系" for items in found)


async def test_same_conversation_answered_by_both_engines_with_the_same_metrics(server, world):
    extracted = {"memory": [{"id": "0", "text": "客户的充电桩型号是 ACX-7"}]}
    server.rule({"content": json.dumps(extracted, ensure_ascii=False)}, model="fake-mem0")
    server.rule({"content": "好的，已记录您的充电桩型号 ACX-7。"}, contains="ACX-7")
    await sync_to_async(world.exchange)("你好，在吗", "您好，我是小e，请问有什么可以帮您？", 5)
    message = [{"role": "user", "content": "我家的充电桩是 ACX-7", "name": world.sender}]

    chat_reply = await ChatEngine().generate_response(message, world.conversation.pk)
    mem0 = Mem0Engine()
    mem0_reply = await mem0.generate_response(message, world.conversation.pk)
    await mem0.flush()

    for reply, name in ((chat_reply, "chat"), (mem0_reply, "mem0")):
        assert reply.engine == name
        assert reply.content == "好的，已记录您的充电桩型号 ACX-7。"
        assert set(reply.latency_ms) == set(STAGES)
        assert reply.input_tokens > 0 and reply.output_tokens > 0 and reply.model == "fake-model"
        assert set(reply.cache_hits) == {"memory", "long_term"}
    # Both saw the same recent turn from the pipeline's rows.
    for body in chat_requests(server):
        assert {"role": "assistant", "content": "您好，我是小e，请问有什么可以帮您？"} in body["messages"]
    # Mem0Engine memorised the exchange through mem0 (LLM extraction + embeddings) after replying.
    user_id = contact_key(world.agent_id, world.conversation.chat_name, world.sender)
    found = await mem0.search_memories(user_id, "充电桩型号")
    assert [item["memory"] for item in found] == ["客户的充电桩型号是 ACX-7"]


async def test_mem0_health_check_tells_a_store_held_by_another_process_from_a_broken_one(server, transactional_db):
    holder, checker = Mem0Engine(), Mem0Engine()
    assert (await checker.health_check())["ok"]  # opens the store for the check and releases it
    await holder.search_memories("someone", "你好")  # the "worker" holds the local store now
    health = await checker.health_check()
    assert health["ok"] and "正由另一个进程" in health["detail"]
    assert await holder.search_memories("someone", "你好") == []

    server.fail("500", path="any")
    health = await Mem0Engine().health_check()
    assert not health["ok"]


async def test_mem0_without_a_model_is_unhealthy_and_replies_still_go_out(server, world, settings):
    settings.MEM0_LLM_MODEL = ""
    settings.LLM_ROUTES = {"default": settings.LLM_ROUTES["default"]}  # no embedding route either
    from apps.llm_gateway.testing import reset_gateway

    reset_gateway()
    server.rule({"content": "您好，请问有什么可以帮您？"})
    engine = Mem0Engine()
    health = await engine.health_check()
    assert not health["ok"] and "记忆引擎缺少配置" in health["detail"] and "向量模型" in health["detail"]

    reply = await engine.generate_response(
        [{"role": "user", "content": "在吗", "name": world.sender}], world.conversation.pk
    )
    await engine.flush()
    assert reply.content == "您好，请问有什么可以帮您？" and reply.engine == "mem0"
