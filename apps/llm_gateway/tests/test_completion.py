"""complete(): the answer, its usage and cost, tool calls and the wire request, through the real openai
client against the loopback server."""

import copy

import pytest
from openai import AsyncOpenAI, DefaultAioHttpClient

from apps.core import aio
from apps.llm_gateway.services import complete
from apps.llm_gateway.testing import reset_gateway
from apps.llm_gateway.tests.conftest import user_msg


async def test_answers_with_usage_cost_and_model(gw):
    gw.rule({"content": "您好，请问有什么可以帮您？", "usage": {"input_tokens": 1000, "output_tokens": 500}})
    c = await complete(user_msg(), user={"agent": "a1", "customer": "张三"})
    assert (c.content, c.provider, c.model, c.offline) == ("您好，请问有什么可以帮您？", "p1", "m1", False)
    assert (c.usage.input_tokens, c.usage.output_tokens) == (1000, 500)
    assert c.cost == pytest.approx(0.01 + 0.01)  # 1k in × 0.01 + 0.5k out × 0.02
    assert [a.outcome for a in c.attempts] == ["ok"] and c.latency_ms > 0 and c.call_id
    assert gw.requests(path="chat")[0]["authorization"] == "Bearer key-1"
    await aio.drain()


async def test_tool_calls_come_back(gw):
    gw.rule({"tool_calls": [{"name": "lookup_order", "arguments": {"order_no": "A1"}}]}, contains="订单", tools=True)
    tools = [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}]
    c = await complete(user_msg("查一下我的订单"), tools=tools)
    assert [(t.name, t.arguments) for t in c.tool_calls] == [("lookup_order", '{"order_no": "A1"}')]
    assert c.finish_reason == "tool_calls"
    assert gw.requests(path="chat")[0]["body"]["tools"] == tools
    await aio.drain()


async def test_unknown_route_is_served_by_the_default_route(gw):
    c = await complete(user_msg("你好"), route="no-such-route")
    assert (c.model, c.content, c.offline) == ("m1", "模拟回复：你好", False)
    await aio.drain()


async def test_unknown_model_is_charged_the_default_price_and_flagged(gw, settings):
    settings.LLM_ROUTES = {"default": [{"provider": "p1", "model": "mystery"}]}
    reset_gateway()
    gw.rule({"content": "ok", "usage": {"input_tokens": 1000, "output_tokens": 1000}})
    c = await complete(user_msg())
    assert c.price_known is False
    assert c.cost == pytest.approx(settings.COST_DEFAULT_INPUT_PER_1K + settings.COST_DEFAULT_OUTPUT_PER_1K)
    await aio.drain()


def test_sync_callers_bridge_with_aio_run(gw):
    assert aio.run(complete(user_msg("同步"))).content == "模拟回复：同步"
    aio.run(aio.drain())


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
    from openai._utils import async_maybe_transform
    from openai.types.chat import completion_create_params

    assert (
        await async_maybe_transform(copy.deepcopy(body), completion_create_params.CompletionCreateParamsNonStreaming)
        == body
    )


async def test_the_gateway_sends_what_chat_completions_create_sends(gw):
    """Same wire request as the SDK's own method for the same arguments: body and auth."""
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
    await aio.drain()
