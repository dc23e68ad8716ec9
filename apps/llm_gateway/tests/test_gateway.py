"""complete() / embed() against the loopback server through the real openai client."""

import asyncio
import time

import pytest
from django.conf import settings

from apps.llm_gateway import services
from apps.llm_gateway.services import complete, embed
from apps.llm_gateway.tests.conftest import KB_ANSWER, user_msg
from apps.llm_gateway.types import EmbeddingUnavailable, GatewayError


async def test_answers_with_usage_cost_and_model(gw):
    gw.rule({"content": "您好，请问有什么可以帮您？", "usage": {"input_tokens": 1000, "output_tokens": 500}})
    c = await complete(user_msg(), user={"agent": "a1", "customer": "张三"})
    assert (c.content, c.provider, c.model, c.offline) == ("您好，请问有什么可以帮您？", "p1", "m1", False)
    assert (c.usage.input_tokens, c.usage.output_tokens) == (1000, 500)
    assert c.cost == pytest.approx(0.01 + 0.01)  # 1k in × 0.01 + 0.5k out × 0.02
    assert [a.outcome for a in c.attempts] == ["ok"] and c.latency_ms > 0 and c.call_id
    assert gw.requests(path="chat")[0]["authorization"] == "Bearer key-1"


async def test_tool_calls_come_back(gw):
    gw.rule({"tool_calls": [{"name": "lookup_order", "arguments": {"order_no": "A1"}}]}, contains="订单", tools=True)
    tools = [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}]
    c = await complete(user_msg("查一下我的订单"), tools=tools)
    assert [(t.name, t.arguments) for t in c.tool_calls] == [("lookup_order", '{"order_no": "A1"}')]
    assert c.finish_reason == "tool_calls"
    assert gw.requests(path="chat")[0]["body"]["tools"] == tools


# Bodies of every shape the platform sends: plain and multi-part text, a system prompt, an assistant turn
# with tool calls, a tool result, tools with a forced choice, temperature and max_tokens.
SDK_BODIES = [
    {"model": "m1", "messages": [{"role": "user", "content": "你好"}]},
    {
        "model": "m1",
        "messages": [
            {"role": "system", "content": "你是充电桩客服。"},
            {"role": "user", "content": [{"type": "text", "text": "查一下订单 A1"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "lookup_order", "arguments": '{"no":"A1"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"status": "已发货"}'},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup_order"}},
        "temperature": 0.3,
        "max_tokens": 256,
    },
]


@pytest.mark.parametrize("body", SDK_BODIES)
async def test_chat_body_needs_no_sdk_transform(body):
    """The gateway posts its JSON body with the SDK's `client.post` instead of `chat.completions.create`,
    skipping the SDK's per-call transform of the body; that transform must leave such bodies unchanged
    (if an openai upgrade starts rewriting them, this fails and the gateway must follow)."""
    import copy

    from openai._utils import async_maybe_transform
    from openai.types.chat import completion_create_params

    assert (
        await async_maybe_transform(copy.deepcopy(body), completion_create_params.CompletionCreateParamsNonStreaming)
        == body
    )


async def test_the_gateway_sends_what_chat_completions_create_sends(gw):
    """Same wire request as the SDK's own method for the same arguments: body and auth."""
    from openai import AsyncOpenAI, DefaultAioHttpClient

    body = SDK_BODIES[1]
    await complete(
        body["messages"],
        tools=body["tools"],
        tool_choice=body["tool_choice"],
        temperature=body["temperature"],
        max_tokens=body["max_tokens"],
    )
    sdk = AsyncOpenAI(api_key="key-1", base_url=gw.base_url, max_retries=0, http_client=DefaultAioHttpClient())
    try:
        await sdk.chat.completions.create(**body)
    finally:
        await sdk.close()
    ours, theirs = gw.requests(path="chat")
    assert ours["body"] == theirs["body"] == body
    assert ours["authorization"] == theirs["authorization"] == "Bearer key-1"


async def test_falls_back_to_second_model_on_500s(gw):
    gw.fail("500", model="m1")
    c = await complete(user_msg())
    assert (c.provider, c.model) == ("p2", "m2")
    assert [(a.model, a.outcome) for a in c.attempts] == [("m1", "error")] * 3 + [("m2", "ok")]
    assert len(gw.requests(model="m1")) == 3  # first try + LLM_RETRIES


async def test_falls_back_on_timeout_within_the_attempt_timeout(gw, settings):
    settings.LLM_RETRIES = 0
    gw.fail("timeout", model="m1", hang=10)
    settings.LLM_PROVIDERS["p1"]["timeout"] = 0.3
    services.reset_gateway()
    started = time.perf_counter()
    c = await complete(user_msg())
    assert c.model == "m2" and [a.outcome for a in c.attempts] == ["timeout", "ok"]
    assert time.perf_counter() - started < 2


async def test_honours_retry_after_then_succeeds_on_same_model(gw):
    gw.fail("429", model="m1", times=1, retry_after=0.4)
    started = time.perf_counter()
    c = await complete(user_msg())
    assert c.model == "m1" and [a.outcome for a in c.attempts] == ["rate_limited", "ok"]
    assert time.perf_counter() - started >= 0.4


async def test_malformed_answer_moves_on_without_retry(gw):
    gw.fail("malformed", model="m1")
    c = await complete(user_msg())
    assert c.model == "m2" and [a.outcome for a in c.attempts] == ["error", "ok"]


async def test_circuit_opens_after_repeated_failures_and_recovers(gw):
    gw.fail("500", model="m1")
    await complete(user_msg())  # 3 failures → open (LLM_CIRCUIT_FAILURES = 3)
    assert services.circuit_states()["p1/m1"] == "open"
    before = len(gw.requests(model="m1"))
    c = await complete(user_msg())
    assert [a.outcome for a in c.attempts] == ["circuit_open", "ok"] and c.model == "m2"
    assert len(gw.requests(model="m1")) == before  # skipped: no request reached m1
    gw.heal()
    await asyncio.sleep(settings.LLM_CIRCUIT_COOLDOWN + 0.1)
    assert services.circuit_states()["p1/m1"] == "half_open"
    c = await complete(user_msg())  # the probe
    assert c.model == "m1" and [a.outcome for a in c.attempts] == ["ok"]
    assert "p1/m1" not in services.circuit_states()  # closed again


async def test_half_open_failed_probe_reopens(gw):
    gw.fail("500", model="m1")
    await complete(user_msg())
    await asyncio.sleep(settings.LLM_CIRCUIT_COOLDOWN + 0.1)
    c = await complete(user_msg())  # probe fails → open again, no retries on an open circuit
    assert [a.outcome for a in c.attempts][:1] == ["error"] and c.model == "m2"
    assert services.circuit_states()["p1/m1"] == "open"


async def test_offline_answers_when_every_model_fails(gw):
    gw.fail("500")
    c = await complete(user_msg("我想退货"))
    assert (c.offline, c.provider, c.content, c.offline_reason) == (True, "offline", KB_ANSWER, "unavailable")
    c = await complete(user_msg("别的问题"))
    assert c.offline and c.content == settings.LLM_OFFLINE_APOLOGY
    with pytest.raises(GatewayError):
        await complete(user_msg(), offline_fallback=False)


async def test_offline_is_the_embedded_default_without_providers(gw, settings):
    settings.LLM_PROVIDERS = {}
    settings.LLM_ROUTES = {}
    services.reset_gateway()
    c = await complete(user_msg("我想退货"))
    assert c.offline and c.content == KB_ANSWER and c.offline_reason == "no_provider"
    assert gw.requests() == []


async def test_unknown_model_is_charged_the_default_price_and_flagged(gw, settings):
    settings.LLM_ROUTES = {"default": [{"provider": "p1", "model": "mystery"}]}
    services.reset_gateway()
    gw.rule({"content": "ok", "usage": {"input_tokens": 1000, "output_tokens": 1000}})
    c = await complete(user_msg())
    assert c.price_known is False
    assert c.cost == pytest.approx(settings.COST_DEFAULT_INPUT_PER_1K + settings.COST_DEFAULT_OUTPUT_PER_1K)


async def test_embed_and_its_fallback(gw):
    e = await embed(["我想退货", "我要退货"])
    assert (e.provider, e.model, len(e.vectors), len(e.vectors[0])) == ("p2", "emb", 2, 256)
    assert e.usage.input_tokens == 8 and e.cost == pytest.approx(8 * 0.001 / 1000)
    gw.fail("500", path="embeddings")
    with pytest.raises(EmbeddingUnavailable):
        await embed(["x"])


def test_sync_callers_use_the_shared_loop(gw):
    from apps.core import aio

    c = aio.run(complete(user_msg("同步")))
    assert c.content == "模拟回复：同步"
    assert services.complete_sync(user_msg("再来")).content == "模拟回复：再来"
