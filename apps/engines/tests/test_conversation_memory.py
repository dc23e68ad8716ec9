"""Conversation memory: recent turns in a window, the rolling summary, contact facts; cached in Redis
per conversation version, and still served (from this process) while Redis is down."""

import time

import pytest
import redis
from asgiref.sync import sync_to_async

from apps.core.testing import RedisServer
from apps.engines import memory
from apps.engines.chat import ChatEngine
from apps.llm_gateway.testing import fake_openai, use_fake_provider

from .factories import ContactFactFactory, ConversationSummaryFactory


@pytest.fixture
def own_redis(settings, tmp_path):
    """A redis-server of this test's own (so it can be stopped), used as the Django cache."""
    server = RedisServer(tmp_path)
    server.start()
    port, process, client = server.port, server.process, redis.Redis(port=server.port)
    settings.REDIS_ASYNC_SOCKET_TIMEOUT = 0.5  # the engines' Redis client for this server: a hang is seen quickly
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "KEY_PREFIX": "engines-test",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    memory.memory_cache.reset_local()
    yield process, client
    if process.poll() is None:
        process.terminate()
        process.wait(10)
    memory.memory_cache.reset_local()


async def test_recent_turns_within_the_window_and_not_the_new_message(world, settings):
    settings.ENGINE_MEMORY_WINDOW_MINUTES = 30
    await sync_to_async(world.exchange)("上个月的问题", "上个月的回答", 90)
    await sync_to_async(world.exchange)("桩不亮了", "请检查空开是否跳闸。", 10)
    await sync_to_async(world.exchange)("空开没跳", None, 0)  # the message being answered

    snapshot, hit = await memory.retrieve_memory(world.conversation.pk, world.sender, "空开没跳")

    assert not hit
    assert snapshot.turns == [
        {"role": "user", "content": "桩不亮了", "name": "张三"},
        {"role": "assistant", "content": "请检查空开是否跳闸。"},
    ]


async def test_second_retrieval_is_a_cache_hit_until_a_new_message(world):
    await sync_to_async(ConversationSummaryFactory)(
        conversation_id=world.conversation.pk, summary="客户咨询过安装费用。"
    )
    await memory.remember_fact(world.conversation.pk, world.sender, "客户住在渝北区")

    first, hit1 = await memory.retrieve_memory(world.conversation.pk, world.sender, "安装要多久")
    second, hit2 = await memory.retrieve_memory(world.conversation.pk, world.sender, "安装要多久")
    other_query, hit3 = await memory.retrieve_memory(world.conversation.pk, world.sender, "多少钱")

    assert (hit1, hit2, hit3) == (False, True, False)
    assert second == first
    assert first.summary == "客户咨询过安装费用。" and first.facts == ["客户住在渝北区"]

    await memory.invalidate_memory(world.conversation.pk)  # what the pipeline calls when a message arrives
    _, hit4 = await memory.retrieve_memory(world.conversation.pk, world.sender, "安装要多久")
    assert hit4 is False


async def test_the_cache_is_redis_and_replies_go_out_with_redis_stopped(world, own_redis, settings):
    process, client = own_redis
    conversation_id = world.conversation.pk
    await sync_to_async(world.exchange)("桩不亮了", "请检查空开是否跳闸。", 10)

    _, hit1 = await memory.retrieve_memory(conversation_id, world.sender, "空开没跳")
    _, hit2 = await memory.retrieve_memory(conversation_id, world.sender, "空开没跳")
    assert (hit1, hit2) == (False, True)
    assert any(b"engines:memory:" in key for key in client.keys("*"))  # cached in Redis, with a TTL
    key = next(key for key in client.keys("*") if b"engines:memory:" in key)
    assert 0 < client.ttl(key) <= settings.REDIS_TTL

    process.terminate()
    process.wait(10)

    # Redis is gone: retrieval and invalidation fall back to the in-process cache.
    snapshot, hit3 = await memory.retrieve_memory(conversation_id, world.sender, "空开没跳")
    assert hit3 is True and snapshot.turns[-1]["content"] == "请检查空开是否跳闸。"
    await memory.invalidate_memory(conversation_id)
    _, hit4 = await memory.retrieve_memory(conversation_id, world.sender, "空开没跳")
    _, hit5 = await memory.retrieve_memory(conversation_id, world.sender, "空开没跳")
    assert (hit4, hit5) == (False, True)

    with fake_openai() as server:
        use_fake_provider(server, settings)
        server.rule({"content": "空开没跳的话，请看一下桩的指示灯是什么颜色？"}, contains="空开没跳")
        started = time.monotonic()
        reply = await ChatEngine().generate_response(
            [{"role": "user", "content": "空开没跳", "name": world.sender}], conversation_id
        )
    assert time.monotonic() - started < 5
    assert reply.content and reply.cache_hits == {"memory": 1, "long_term": 1}
    if server.requests(path="chat"):  # the gateway got through without Redis: the model answered with memory
        assert reply.content == "空开没跳的话，请看一下桩的指示灯是什么颜色？"
        request = server.requests(path="chat")[-1]["body"]
        assert {"role": "assistant", "content": "请检查空开是否跳闸。"} in request["messages"]
    else:  # the gateway needs Redis: the engine still answers (knowledge base or apology, handed to a human)
        assert reply.offline and reply.handoff


async def test_turns_leaving_the_window_are_folded_into_the_rolling_summary(world, settings):
    settings.ENGINE_MEMORY_WINDOW_MINUTES = 30
    await sync_to_async(world.exchange)("我想装一个 7kW 的桩", "好的，请问是自有车位吗？", 120)
    await sync_to_async(world.exchange)("是自有车位，在渝北", "可以安装，我们安排勘测。", 100)
    await sync_to_async(world.exchange)("勘测什么时候来", "明天上午。", 10)

    snapshot, _ = await memory.retrieve_memory(world.conversation.pk, world.sender, "好的")
    assert snapshot.summary_due and len(snapshot.turns) == 2

    with fake_openai() as server:
        use_fake_provider(server, settings)
        server.rule({"content": "客户要在渝北自有车位安装 7kW 桩，已安排勘测。"}, model="fake-cheap")
        assert await memory.refresh_summary(world.conversation.pk) is True
        assert await memory.refresh_summary(world.conversation.pk) is False  # nothing new left the window
        (request,) = server.requests(path="chat")
    transcript = request["body"]["messages"][-1]["content"]
    assert "客户：我想装一个 7kW 的桩" in transcript and "客服：可以安装，我们安排勘测。" in transcript
    assert "勘测什么时候来" not in transcript  # still in the window: not summarised yet

    snapshot, hit = await memory.retrieve_memory(world.conversation.pk, world.sender, "好的")
    assert not hit  # the new summary invalidated the cached memory
    assert snapshot.summary == "客户要在渝北自有车位安装 7kW 桩，已安排勘测。"
    assert not snapshot.summary_due


async def test_invalidations_during_an_outage_reach_redis_when_it_answers_again(world, own_redis):
    import signal

    process, client = own_redis
    conversation_id = world.conversation.pk
    _, hit = await memory.retrieve_memory(conversation_id, world.sender, "在吗")
    assert hit is False  # cached in Redis under the conversation's current memory version

    process.send_signal(signal.SIGSTOP)  # Redis hangs: calls time out
    try:
        _, hit = await memory.retrieve_memory(conversation_id, world.sender, "在吗")
        assert hit is True  # the in-process copy answers
        await memory.invalidate_memory(conversation_id)  # a new message arrives during the outage
        _, hit = await memory.retrieve_memory(conversation_id, world.sender, "在吗")
        assert hit is False
    finally:
        process.send_signal(signal.SIGCONT)
    memory.redis_guard.reset()  # as if the retry interval had passed

    _, hit = await memory.retrieve_memory(conversation_id, world.sender, "在吗")
    assert hit is False  # Redis's entry from before the outage is not served
    _, hit = await memory.retrieve_memory(conversation_id, world.sender, "在吗")
    assert hit is True


async def test_a_fact_is_kept_only_for_an_existing_conversation_and_a_named_contact(world):
    remember = memory.remember_fact
    assert await remember(world.conversation.pk, world.sender, "  客户的车是 比亚迪汉  ") is True
    assert await remember(world.conversation.pk, world.sender, "客户的车是 比亚迪汉") is True  # the same fact, once
    assert await remember(999_999, world.sender, "不存在的会话") is False
    assert await remember(world.conversation.pk, "", "没有联系人") is False
    assert await remember(world.conversation.pk, world.sender, "   ") is False
    snapshot, _ = await memory.retrieve_memory(world.conversation.pk, world.sender, "车")
    assert snapshot.facts == ["客户的车是 比亚迪汉"]


async def test_a_supervisors_fact_reaches_the_next_retrieval(world):
    first, _ = await memory.retrieve_memory(world.conversation.pk, world.sender, "桩装在哪")
    assert first.facts == []
    await sync_to_async(ContactFactFactory)(
        agent_id=world.agent_id, chat_name=world.conversation.chat_name, contact=world.sender, fact="桩装在地库 B2"
    )
    again, hit = await memory.retrieve_memory(world.conversation.pk, world.sender, "桩装在哪")
    assert not hit and again.facts == ["桩装在地库 B2"]
