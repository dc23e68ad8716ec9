"""The agent runtime against the in-process fake server: the whole loop, offline queueing, restarts,
never-twice sends, takeover, REST fallback, token refresh, secrets kept out of logs."""

import asyncio
import logging

import pytest

from agent.drivers.simulator import SimulatorDriver
from agent.runtime import AgentRuntime
from agent.store import DeadLetters, SentLedger
from agent.tests.conftest import agent_config, running_agent, wait_for
from agent.tests.fakeserver import SECRET, FakeServer


async def test_private_message_gets_its_reply_and_ack(server, tmp_path):
    async with running_agent(agent_config(tmp_path, server.url)) as (runtime, sim):
        sim.inject("张三", "你好，发货了吗？")
        await wait_for(lambda: sim.outbox and server.acks)
        assert sim.outbox[0]["chat"] == "张三"
        assert sim.outbox[0]["text"] == "收到：你好，发货了吗？"
        assert sim.outbox[0]["at"] == []
        assert server.acks[0]["status"] == "delivered"
        await wait_for(lambda: server.heartbeats)
    (item,) = server.messages.values()
    assert item["chat_type"] == "private" and item["sender"] == "张三" and item["is_at_me"] is False
    assert runtime.counters["takeovers"] == 0  # the bot's own echo is not a person typing


async def test_group_reply_mentions_the_sender(server, tmp_path):
    async with running_agent(agent_config(tmp_path, server.url)) as (runtime, sim):
        sim.inject("车友群", "保养多少钱？", sender="李四", kind="group")
        sim.inject("车友群", "大家好", sender="王五", kind="group", mention=False)  # not for us
        await wait_for(lambda: sim.outbox)
    (item,) = server.messages.values()
    assert item["content"] == "保养多少钱？" and item["is_at_me"] is True and item["chat_type"] == "group"
    assert sim.outbox[0]["at"] == ["李四"]
    assert sim.outbox[0]["shown"].startswith("@李四\u2005")
    assert runtime.counters["takeovers"] == 0


async def test_server_down_then_up_delivers_everything_in_order_once(tmp_path):
    server = FakeServer()  # not started yet
    config = agent_config(tmp_path, server.url)
    async with running_agent(config) as (runtime, sim):
        for i in range(120):
            sim.inject(f"客户{i % 7}", f"消息 {i}", msg_id=f"m{i}")
        await wait_for(lambda: len(runtime.queue) == 120)
        await server.start()
        try:
            await wait_for(lambda: len(sim.outbox) == 120 and len(server.acks) == 120, timeout=20)
        finally:
            await server.stop()
    assert [m["content"] for m in server.messages.values()] == [f"消息 {i}" for i in range(120)]
    sent = [o["text"] for o in sim.outbox]
    assert sent == [f"收到：消息 {i}" for i in range(120)]
    assert len(runtime.queue) == 0


async def test_restart_flushes_the_queue_and_never_resends(server, tmp_path):
    config = agent_config(tmp_path, server.url, server={"url": "http://127.0.0.1:9"})  # unreachable
    sim = SimulatorDriver()
    async with running_agent(config, sim) as (runtime, _):
        for i in range(5):
            sim.inject("张三", f"问题 {i}", msg_id=f"q{i}")
        await wait_for(lambda: len(runtime.queue) == 5)
    # restart, same state dir, server reachable: the queue is flushed, each reply sent once
    config = agent_config(tmp_path, server.url)
    sim2 = SimulatorDriver()
    async with running_agent(config, sim2) as (runtime, _):
        await wait_for(lambda: len(sim2.outbox) == 5 and len(server.acks) == 5)
    assert len(server.messages) == 5
    # a third run: the server pushes the replies again (say it missed the acks) — nothing is resent
    for reply in server.replies.values():
        reply["status"] = "sent"
    sim3 = SimulatorDriver()
    async with running_agent(config, sim3) as (runtime, _):
        await wait_for(lambda: len(server.acks) == 10)
    assert sim3.outbox == []
    assert {a["status"] for a in server.acks} == {"delivered"}


async def test_reply_marked_sending_after_a_crash_is_failed_not_resent(server, tmp_path):
    config = agent_config(tmp_path, server.url)
    runtime = AgentRuntime(config, SimulatorDriver())
    runtime.ledger.set("777", SentLedger.SENDING)  # the process died inside the UI send
    for store in (runtime.queue, runtime.ledger, runtime.seen):
        store.close()
    server.push({"type": "reply", "reply_id": 777, "chat": "张三", "content": "您好", "at": None})
    sim = SimulatorDriver()
    async with running_agent(config, sim):
        await wait_for(lambda: server.acks)
    assert sim.outbox == []
    assert server.acks[0]["reply_id"] == 777 and server.acks[0]["status"] == "failed"
    assert "outcome unknown" in server.acks[0]["error"]


async def test_history_replayed_is_not_sent_again(server, tmp_path):
    async with running_agent(agent_config(tmp_path, server.url)) as (runtime, sim):
        sim.inject("张三", "第一条")
        await wait_for(lambda: len(sim.outbox) == 1)
        sim.set_fault("history_replayed")
        sim.inject("张三", "第二条")
        await wait_for(lambda: len(sim.outbox) == 2)
        await wait_for(lambda: not sim.faults["history_replayed"])
    assert [m["content"] for m in server.messages.values()] == ["第一条", "第二条"]
    assert runtime.counters["duplicates"] >= 1  # 第一条 shown again
    assert runtime.counters["takeovers"] == 0


async def test_human_typing_pauses_the_chat_and_tells_the_server(server, tmp_path):
    async with running_agent(agent_config(tmp_path, server.url)) as (runtime, sim):
        sim.inject("张三", "在吗")
        await wait_for(lambda: len(sim.outbox) == 1)
        sim.type_as_human("张三", "我来处理，稍等")
        await wait_for(lambda: server.takeovers)
        assert server.takeovers[0]["chat_name"] == "张三"
        server.push({"type": "reply", "reply_id": 900, "chat": "张三", "content": "机器人回复", "at": None})
        await wait_for(lambda: any(a["reply_id"] == 900 for a in server.acks))
    assert len(sim.outbox) == 1  # paused: not sent
    ack = next(a for a in server.acks if a["reply_id"] == 900)
    assert ack["status"] == "failed" and "taken over" in ack["error"]


async def test_rest_fallback_when_websocket_is_refused(tmp_path):
    server = await FakeServer(ws_enabled=False).start()
    try:
        config = agent_config(tmp_path, server.url, server={"transport": "rest"})
        async with running_agent(config) as (runtime, sim):
            sim.inject("张三", "走 REST")
            await wait_for(lambda: sim.outbox and server.acks, timeout=15)
            assert runtime.mode == "rest"
            await wait_for(lambda: server.heartbeats, timeout=5)
    finally:
        await server.stop()
    assert server.rest_posts >= 1 and server.ws_connections == 0


async def test_takeover_reaches_the_server_over_rest_too(tmp_path):
    server = await FakeServer(ws_enabled=False).start()
    try:
        config = agent_config(tmp_path, server.url, server={"transport": "rest"})
        async with running_agent(config) as (runtime, sim):
            sim.inject("张三", "在吗")
            await wait_for(lambda: sim.outbox and server.acks, timeout=15)
            sim.type_as_human("张三", "我来处理，稍等")
            await wait_for(lambda: server.takeovers, timeout=15)
    finally:
        await server.stop()
    assert server.takeovers[0] == {"chat_name": "张三", "active": True}


async def test_auto_transport_falls_back_to_rest(tmp_path):
    server = await FakeServer(ws_enabled=False).start()
    try:
        async with running_agent(agent_config(tmp_path, server.url)) as (runtime, sim):
            sim.inject("张三", "自动降级")
            await wait_for(lambda: sim.outbox and server.acks, timeout=15)
            assert runtime.mode == "rest"
    finally:
        await server.stop()


async def test_mention_popup_missing_mentions_in_text(server, tmp_path):
    async with running_agent(agent_config(tmp_path, server.url)) as (runtime, sim):
        sim.set_fault("mention_popup_missing")
        sim.inject("车友群", "几点关门？", sender="李四", kind="group")
        await wait_for(lambda: sim.outbox and server.acks)
    assert sim.outbox[0]["text"] == "@李四 收到：几点关门？" and sim.outbox[0]["at"] == []
    assert server.acks[0]["status"] == "delivered"


async def test_send_timeout_is_reported_failed_and_not_retried(server, tmp_path):
    async with running_agent(agent_config(tmp_path, server.url)) as (runtime, sim):
        sim.set_fault("send_timeout")
        sim.inject("张三", "超时测试")
        await wait_for(lambda: server.acks)
        server.replies[next(iter(server.replies))]["status"] = "sent"
    assert server.acks[0]["status"] == "failed" and "not resent" in server.acks[0]["error"]
    assert len(sim.outbox) == 1
    assert runtime.counters["send_failures"] == 1


async def test_token_is_refreshed_before_it_expires(tmp_path):
    server = await FakeServer(access_ttl=61).start()  # refreshed when < 60 s are left
    try:
        async with running_agent(agent_config(tmp_path, server.url)) as (runtime, sim):
            await wait_for(lambda: server.refreshes >= 1, timeout=5)
            await wait_for(lambda: len(server.heartbeats) >= 3, timeout=5)
    finally:
        await server.stop()
    assert server.logins == 1


async def test_wrong_secret_is_reported_and_never_logged(tmp_path, caplog):
    server = await FakeServer().start()
    try:
        config = agent_config(tmp_path, server.url, server={"secret": "wrong-secret-value-123"})
        with caplog.at_level(logging.INFO):
            from agent import logs

            logs.SECRETS.add("wrong-secret-value-123")
            async with running_agent(config):
                await wait_for(lambda: "refused the agent's credentials" in caplog.text)
    finally:
        await server.stop()
    for record in caplog.records:
        assert "wrong-secret-value-123" not in logs.SECRETS.redact(record.getMessage())
    assert SECRET not in caplog.text


async def test_heartbeat_has_the_figures_and_no_secret(server, tmp_path):
    async with running_agent(agent_config(tmp_path, server.url)) as (runtime, sim):
        await wait_for(lambda: server.heartbeats)
    beat = server.heartbeats[0]
    for key in (
        "cpu",
        "memory",
        "disk",
        "wx_online",
        "driver",
        "queue_size",
        "dropped",
        "processed",
        "send_failures",
        "ui_latency_ms",
        "versions",
    ):
        assert key in beat
    assert beat["driver"] == "simulator" and beat["wx_online"] is True
    assert SECRET not in str(beat)
    assert "access" not in str(beat).lower().replace("processed", "")


async def test_a_message_the_server_refuses_does_not_block_the_queue(server, tmp_path):
    async with running_agent(agent_config(tmp_path, server.url)) as (runtime, sim):
        sim.inject("张三", "")  # empty: the server answers it with a validation error
        sim.inject("张三", "下一条")
        await wait_for(lambda: sim.outbox)
        await wait_for(lambda: len(runtime.queue) == 0)
        await wait_for(lambda: server.heartbeats and server.heartbeats[-1].get("dead_letters") == 1)
    assert runtime.counters["rejected"] == 1
    assert [m["content"] for m in server.messages.values()] == ["下一条"]
    (dead,) = runtime.dead_letters.entries()
    assert dead["item"]["text"] == "" and dead["reason"].startswith("invalid") and "content" in dead["reason"]


# -- dead letters: a message the server refuses for good is set aside, never retried forever ----------------------
def dead_letters_file(tmp_path) -> DeadLetters:
    return DeadLetters(tmp_path / "state" / "dead-letters.log", SECRET)


@pytest.mark.parametrize("transport", ["ws", "rest"])
async def test_refused_messages_go_to_the_dead_letter_file_and_survive_a_restart(tmp_path, transport):
    server = await FakeServer(errors_by_index=True).start()  # WebSocket errors name the item by index only
    try:
        config = agent_config(tmp_path, server.url, server={"transport": transport})
        async with running_agent(config) as (runtime, sim):
            for text in ("第一条", "", "第三条", ""):
                sim.inject("张三", text)
            await wait_for(lambda: len(runtime.queue) == 0 and len(sim.outbox) == 2)
            await wait_for(lambda: server.heartbeats and server.heartbeats[-1].get("dead_letters") == 2)
        assert [m["content"] for m in server.messages.values()] == ["第一条", "第三条"]
        assert runtime.status()["dead_letters"] == 2
        async with running_agent(config) as (again, _):  # counted from the file after a restart
            assert len(again.dead_letters) == 2 and again.heartbeat()["dead_letters"] == 2
    finally:
        await server.stop()
    entries = dead_letters_file(tmp_path).entries()
    assert [e["item"]["text"] for e in entries] == ["", ""] and all(e["reason"] for e in entries)
    assert b"\xe7\xac\xac" not in (tmp_path / "state" / "dead-letters.log").read_bytes()  # encrypted at rest


async def test_a_batch_refused_whole_is_halved_until_the_message_at_fault_is_set_aside(tmp_path):
    """An older server that announces no frame limit answers a frame over it with `too_large` and closes."""
    server = await FakeServer(max_message_bytes=6000).start()
    server.announce_limit = False
    try:
        config = agent_config(tmp_path, server.url, server={"transport": "ws", "batch_size": 8})
        async with running_agent(config) as (runtime, sim):
            for i in range(6):
                sim.inject("张三", f"短消息 {i}")
            sim.inject("张三", "长" * 3000)  # 9 KB: over the limit even alone
            sim.inject("张三", "最后一条")
            await wait_for(lambda: len(runtime.queue) == 0 and len(sim.outbox) == 7, timeout=20)
    finally:
        await server.stop()
    assert [m["content"] for m in server.messages.values()] == [*(f"短消息 {i}" for i in range(6)), "最后一条"]
    (dead,) = dead_letters_file(tmp_path).entries()
    assert dead["item"]["text"] == "长" * 3000 and dead["reason"].startswith("too_large")
    assert server.frames_too_large >= 2


async def test_an_announced_frame_limit_is_kept_without_sending_an_oversized_frame(tmp_path):
    server = await FakeServer(max_message_bytes=6000).start()
    try:
        config = agent_config(tmp_path, server.url, server={"transport": "ws", "batch_size": 8})
        async with running_agent(config) as (runtime, sim):
            await wait_for(lambda: runtime.mode == "ws")
            for i in range(3):
                sim.inject("张三", "较长的消息" * 150 + str(i))  # 2.2 KB each: a batch of 3 does not fit
            sim.inject("张三", "长" * 3000)
            await wait_for(lambda: len(runtime.queue) == 0 and len(sim.outbox) == 3, timeout=20)
            assert len(runtime.dead_letters) == 1
    finally:
        await server.stop()
    assert server.frames_too_large == 0 and server.ws_connections == 1  # never refused, never reconnected


async def test_transient_server_errors_are_retried_not_set_aside(tmp_path):
    server = await FakeServer(server_errors=2).start()
    try:
        async with running_agent(agent_config(tmp_path, server.url, server={"transport": "ws"})) as (runtime, sim):
            sim.inject("张三", "你好")
            await wait_for(lambda: len(runtime.queue) == 0 and sim.outbox, timeout=20)
    finally:
        await server.stop()
    assert server.server_errors == 0 and len(runtime.dead_letters) == 0
    assert [m["content"] for m in server.messages.values()] == ["你好"]


async def test_an_error_frame_about_another_frame_leaves_the_batch_alone(tmp_path):
    server = await FakeServer().start()
    server.refuse_heartbeats = True
    try:
        config = agent_config(tmp_path, server.url, server={"transport": "ws"})
        async with running_agent(config) as (runtime, sim):
            for i in range(30):
                sim.inject("张三", f"消息 {i}")
                await asyncio.sleep(0.05)  # heartbeats (every second, refused) interleave with the batches
            await wait_for(lambda: len(runtime.queue) == 0 and len(sim.outbox) == 30, timeout=20)
    finally:
        await server.stop()
    assert len(runtime.dead_letters) == 0 and len(server.messages) == 30 and server.duplicates == 0  # no batch resent
