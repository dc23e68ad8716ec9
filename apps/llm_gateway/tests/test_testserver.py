"""The loopback OpenAI-compatible server, driven through the real openai client."""

import math

import openai
import pytest
from openai import AsyncOpenAI, DefaultAioHttpClient

from apps.llm_gateway.testing import embed_text, fake_openai

TOOLS = [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object", "properties": {}}}}]


def client(server) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=server.base_url, api_key=server.api_key, http_client=DefaultAioHttpClient(), max_retries=0
    )


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


async def test_chat_default_script_rules_and_tools():
    with fake_openai() as server:
        async with client(server) as c:
            r = await c.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "你好"}])
            assert r.choices[0].message.content == "模拟回复：你好"
            assert r.usage.prompt_tokens == 6 and r.usage.completion_tokens == len("模拟回复：你好")
            server.script([{"content": "第一", "usage": {"input_tokens": 100, "output_tokens": 50}}])
            server.rule({"content": "七天无理由"}, contains="退货")
            server.rule(
                {"tool_calls": [{"name": "lookup_order", "arguments": {"no": "A1"}}]}, contains="订单", tools=True
            )
            server.rule({"content": "已发货"}, last_role="tool")
            r = await c.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "退货"}])
            assert r.choices[0].message.content == "第一" and r.usage.total_tokens == 150
            r = await c.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "退货"}])
            assert r.choices[0].message.content == "七天无理由"
            r = await c.chat.completions.create(
                model="fake-model", tools=TOOLS, messages=[{"role": "user", "content": "查订单"}]
            )
            call = r.choices[0].message.tool_calls[0]
            assert (call.function.name, call.function.arguments, r.choices[0].finish_reason) == (
                "lookup_order",
                '{"no": "A1"}',
                "tool_calls",
            )
            r = await c.chat.completions.create(
                model="fake-model",
                tools=TOOLS,
                messages=[
                    {"role": "user", "content": "查订单"},
                    {"role": "assistant", "tool_calls": [call.model_dump()]},
                    {"role": "tool", "tool_call_id": call.id, "content": "{}"},
                ],
            )
            assert r.choices[0].message.content == "已发货"
        assert len(server.requests(path="chat")) == 5
        assert server.requests()[0]["authorization"] == f"Bearer {server.api_key}"


async def test_failure_modes():
    with fake_openai() as server:
        async with client(server) as c:
            msg = [{"role": "user", "content": "x"}]
            server.fail("500", model="m1", times=1)
            with pytest.raises(openai.InternalServerError):
                await c.chat.completions.create(model="m1", messages=msg)
            assert (await c.chat.completions.create(model="m1", messages=msg)).choices[0].message.content
            server.fail("429", retry_after=2)
            with pytest.raises(openai.RateLimitError) as exc:
                await c.chat.completions.create(model="m1", messages=msg)
            assert exc.value.response.headers["retry-after"] == "2"
            server.heal()
            server.fail("timeout", times=1, hang=10)
            with pytest.raises(openai.APITimeoutError):
                await c.chat.completions.create(model="m1", messages=msg, timeout=0.2)
            server.fail("malformed", times=1)
            with pytest.raises(ValueError):
                await c.chat.completions.create(model="m1", messages=msg)
        assert server.stats()["chat m1 500"] == 1


async def test_embeddings_deterministic_and_similar():
    with fake_openai(dim=64) as server:
        async with client(server) as c:
            texts = ["我想退货怎么办", "我要退货怎么办理", "今天天气很好"]
            e = await c.embeddings.create(model="fake-embedding", input=texts)
            vectors = [d.embedding for d in e.data]
            assert len(vectors[0]) == 64
            assert vectors[0] == pytest.approx(embed_text(texts[0], 64), abs=1e-6)
            assert cosine(vectors[0], vectors[1]) > 0.5 > cosine(vectors[0], vectors[2])
            assert e.usage.prompt_tokens == sum(map(len, texts))
            assert [m.id for m in (await c.models.list()).data] == ["fake-model", "fake-cheap", "fake-embedding"]


async def test_subprocess_mode_same_api():
    with fake_openai(subprocess=True, latency=0.0) as server:
        server.rule({"content": "子进程"}, contains="hi")
        async with client(server) as c:
            r = await c.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content == "子进程"
        assert server.requests(path="chat")[0]["body"]["messages"][0]["content"] == "hi"
