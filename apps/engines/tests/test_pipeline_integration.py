"""The message pipeline deciding with the real engines behind resolve_engine (in process)."""

import json

from apps.core import aio
from apps.engines import manager, memory
from apps.llm_gateway.testing import fake_openai, use_fake_provider


def decide(message):
    from apps.messages import pipeline
    from apps.messages.models import Reply

    aio.run(pipeline.process(message.pk, message.conversation_id), timeout=60)
    return Reply.objects.get(message=message)


def test_pipeline_decides_with_the_chat_engine_and_stores_its_metrics(world, settings):
    from apps.messages.models import Reply

    with fake_openai() as server:
        use_fake_provider(server, settings)
        manager.switch_engine("chat")
        server.rule({"tool_calls": [{"name": "list_contracts", "arguments": {}}]}, contains="合同", tools=True)
        server.rule({"content": "您的合同 HT-2026-0501 正在执行中。"}, last_role="tool")
        world.exchange("你好", "您好，请问有什么可以帮您？", 3)
        message = world.exchange("我的合同到哪一步了", None, 0)

        reply = decide(message)

        assert reply.engine == "chat" and reply.model == "fake-model"
        assert reply.content == "您的合同 HT-2026-0501 正在执行中。"
        assert [(call["name"], call["ok"]) for call in reply.tool_calls] == [("list_contracts", True)]
        assert reply.input_tokens > 0 and reply.confidence >= 0.7
        assert {"memory", "retrieval", "llm", "tools"} <= set(reply.latency_ms)
        # The engine found the sender (the pipeline passes no "name") and so the bound customer.
        second_request = [r["body"] for r in server.requests(path="chat") if r["model"] == "fake-model"][-1]
        results = [json.loads(m["content"]) for m in second_request["messages"] if m["role"] == "tool"]
        assert results[0]["contracts"][0]["number"] == "HT-2026-0501"
        assert reply.status in (*Reply.OUTBOX, Reply.Status.PENDING_REVIEW)


def test_pipeline_follows_a_per_chat_override(world, settings):
    with fake_openai() as server:
        use_fake_provider(server, settings)
        manager.switch_engine("chat")
        manager.switch_engine("offline", conversation_id=world.conversation.pk)
        message = world.exchange("充电桩怎么收费", None, 0)

        reply = decide(message)

    assert reply.engine == "offline"
    health_pings = [{"role": "user", "content": "ping"}]
    assert all(r["body"]["messages"] == health_pings for r in server.requests(path="chat"))


def test_a_new_message_is_not_answered_from_stale_memory(world, settings):
    """The engine caches memory per conversation version and bumps it after its own answers; a turn it did
    not write (here a rule's reply, decided by the pipeline) must still reach the next prompt: the pipeline
    invalidates the cached memory when it stores such a turn."""
    from apps.core import aio
    from apps.rules.tests.factories import RuleFactory

    with fake_openai() as server:
        use_fake_provider(server, settings)
        manager.switch_engine("chat")
        server.rule({"content": "好的，已记下。"})
        RuleFactory(name="渝北", keywords="两路", action="reply", reply_templates="好的，渝北区可以安装。")
        world.exchange("你好", "您好，请问有什么可以帮您？", 5)
        # A retrieval for the same question, cached before the rule's turn (e.g. a run cut off earlier).
        aio.run(memory.retrieve_memory(world.conversation.pk, world.sender, "安装要多久"))
        assert decide(world.exchange("我家在渝北区两路", None, 2)).source == "rule"
        message = world.exchange("安装要多久", None, 0)

        decide(message)

        prompt = [r["body"] for r in server.requests(path="chat") if r["model"] == "fake-model"][-1]["messages"]
    said = [m["content"] for m in prompt if m["role"] in ("user", "assistant")]
    assert "我家在渝北区两路" in said and "好的，渝北区可以安装。" in said
