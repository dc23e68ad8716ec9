"""A customer typing one question in fragments gets one answer (PIPELINE_DEBOUNCE_MS), end to end: real
Daphne and Celery worker, the agent side a `websockets` client; the echo engine answers "收到：<question>", so
the reply shows what the decision saw."""

import asyncio
import json
import time

import pytest

from apps.messages.models import Message, Reply
from apps.messages.testing import recv_until, ws_connect
from apps.messages.tests.helpers import make_agent
from conftest import requires_services

pytestmark = [pytest.mark.e2e, requires_services]

DEBOUNCE_MS = 1500


@pytest.fixture
def debounced_stack(live_env, tmp_path):
    from apps.core.testing import running, start_daphne, start_worker

    env = dict(live_env, PIPELINE_DEBOUNCE_MS=str(DEBOUNCE_MS))
    worker = start_worker(env, tmp_path)
    try:
        daphne, base_url = start_daphne(env, tmp_path)
    except Exception:
        worker.stop()
        raise
    with running(daphne, worker):
        yield base_url


def frame(client_id: str, content: str, chat: str) -> str:
    message = {"id": client_id, "chat_name": chat, "chat_type": "private", "sender": chat, "content": content}
    return json.dumps({"type": "message", "message": {**message, "timestamp": time.time()}})


class Agent:
    """The agent side: sends messages, keeps every frame it receives, acks replies."""

    def __init__(self, ws):
        self.ws, self.frames = ws, []
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        async for raw in self.ws:
            received = json.loads(raw)
            self.frames.append((time.monotonic(), received))
            if received["type"] == "reply":
                await self.ws.send(json.dumps({"type": "ack", "reply_id": received["reply_id"], "status": "delivered"}))

    def of_type(self, kind: str) -> list[dict]:
        return [f for _, f in self.frames if f["type"] == kind]

    async def until(self, kind: str, count: int, within: float = 15) -> None:
        deadline = time.monotonic() + within
        while len(self.of_type(kind)) < count:
            assert time.monotonic() < deadline, f"{count} × {kind} not received: {self.frames}"
            await asyncio.sleep(0.05)

    async def send_spaced(self, chat: str, texts: list[str], gap: float, prefix: str) -> list[int]:
        """Send `texts` as separate messages `gap` seconds apart; their message ids."""
        before = len(self.of_type("accepted"))
        for i, text in enumerate(texts):
            if i:
                await asyncio.sleep(gap)
            await self.ws.send(frame(f"{prefix}-{i}", text, chat))
        await self.until("accepted", before + len(texts))
        return [f["message_id"] for f in self.of_type("accepted")[before:]]


def test_three_fragments_within_the_debounce_get_one_reply_that_saw_all_three(debounced_stack):
    _, token = make_agent()
    fragments = ["你好", "我家的充电桩", "充不上电怎么办？"]

    async def scenario():
        ws = await ws_connect(debounced_stack, token)
        await recv_until(ws, lambda f: f["type"] == "hello")
        agent = Agent(ws)
        sent = time.monotonic()
        ids = await agent.send_spaced("王五", fragments, gap=0.4, prefix="frag")
        await agent.until("reply", 1)
        waited = next(at for at, f in agent.frames if f["type"] == "reply") - sent
        await asyncio.sleep(DEBOUNCE_MS / 1000 + 2)  # nothing else comes for those fragments
        await ws.close()
        return ids, agent.of_type("reply"), waited

    ids, replies, waited = asyncio.run(scenario())
    assert len(replies) == 1
    assert replies[0]["content"] == "收到：" + "\n".join(fragments)  # one decision saw all three texts
    assert replies[0]["message_id"] == ids[-1]  # the reply answers the last fragment
    assert waited >= 0.8 + DEBOUNCE_MS / 1000  # it waited for the window after the newest fragment
    statuses = dict(Message.objects.filter(pk__in=ids).values_list("id", "status"))
    assert statuses == {ids[0]: "joined", ids[1]: "joined", ids[2]: "decided"}
    answered = Reply.objects.filter(message__conversation__chat_name="王五").values_list("message_id", "status")
    assert list(answered) == [(ids[-1], "delivered")]


def test_messages_further_apart_than_the_debounce_get_separate_replies(debounced_stack):
    _, token = make_agent()
    questions = ["充电桩怎么安装？", "保修多久？"]

    async def scenario():
        ws = await ws_connect(debounced_stack, token)
        await recv_until(ws, lambda f: f["type"] == "hello")
        agent = Agent(ws)
        ids = await agent.send_spaced("赵六", questions, gap=DEBOUNCE_MS / 1000 + 1.5, prefix="apart")
        await agent.until("reply", 2)
        await asyncio.sleep(1)
        await ws.close()
        return ids, agent.of_type("reply")

    ids, replies = asyncio.run(scenario())
    assert [(r["message_id"], r["content"]) for r in replies] == [
        (ids[0], "收到：充电桩怎么安装？"),
        (ids[1], "收到：保修多久？"),
    ]
    assert set(Message.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"decided"}


def test_rest_wait_on_fragments_answers_the_question_once(debounced_stack):
    """Simple clients (`?wait=N`): the first fragment is answered "ignore" (joined), the last one gets the reply."""
    import httpx

    _, token = make_agent()

    async def post(client, client_id, text, delay):
        await asyncio.sleep(delay)
        message = {"id": client_id, "chat_name": "钱七", "sender": "钱七", "content": text}
        return await client.post("/api/v1/messages?wait=10", json={"message": message}, timeout=15)

    async def scenario():
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=debounced_stack, headers=headers) as client:
            return await asyncio.gather(post(client, "r-1", "请问", 0), post(client, "r-2", "保修多久？", 0.3))

    first, last = asyncio.run(scenario())
    assert (first.status_code, last.status_code) == (200, 200), (first.text, last.text)
    assert last.json()["action"] == "reply" and last.json()["content"] == "收到：请问\n保修多久？"
    joined = first.json()
    assert (joined["action"], joined["content"], joined["status"]) == ("ignore", "", "joined")
    assert joined["reply_id"] == last.json()["reply_id"]
