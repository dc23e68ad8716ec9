"""Impersonation through the real decision path (pipeline → ChatEngine → gateway → loopback LLM server,
ERP tools on the synced contracts): a WeChat contact whose nickname carries another customer's code, phone
or name gets none of that customer's data — no customer tool, no tool result, no ERP profile in the
prompt — until a supervisor confirms the suggestion; then it does, and the audit names the supervisor."""

import json

import pytest
from django.contrib.auth.models import User

from apps.core import aio
from apps.customers import services as customers
from apps.customers.models import BindingChange, WeChatBinding
from apps.engines import manager
from apps.messages.models import Reply
from apps.messages.tests.factories import ConversationFactory, MessageFactory

VICTIM_DATA = ("HT-2026-0501", "86000", "20 台 7kW", "138****1111", "13800001111", "企业客户")
CUSTOMER_TOOLS = {"get_customer_profile", "list_contracts", "get_contract_detail"}

# (chat type, chat name, sender) of an impostor of 重庆易充物流有限公司 (K1001, mobile 13800001111, contact 张三)
IMPOSTORS = {
    "private-code": ("private", "K1001-渝A-李四-VIP-微信", "K1001-渝A-李四-VIP-微信"),
    "private-phone": ("private", "王经理 13800001111", "王经理 13800001111"),
    "private-name": ("private", "重庆易充物流有限公司", "重庆易充物流有限公司"),
    "group-code": ("group", "渝A车友售后群", "K1001-渝A-李四"),
    "group-phone": ("group", "渝A车友售后群", "13800001111"),
    "group-nickname": ("group", "渝A车友售后群", "张三"),
}


def decide(conversation, sender: str, text: str) -> Reply:
    from apps.messages import pipeline

    at_me = conversation.chat_type == "group"  # in a group the bot answers when @-mentioned
    message = MessageFactory(conversation=conversation, sender=sender, content=text, is_at_me=at_me)
    aio.run(pipeline.process(message.pk, message.conversation_id), timeout=60)
    return Reply.objects.get(message=message)


def llm_requests(server) -> list[dict]:
    """The engine's calls (not the engine manager's health pings)."""
    bodies = [request["body"] for request in server.requests(path="chat") if request["model"] == "fake-model"]
    return [body for body in bodies if body["messages"][0]["role"] == "system"]


def ask_for_contracts(server) -> None:
    """The model asks for the contracts and the profile whenever it is offered tools and sees 合同."""
    calls = [{"name": "list_contracts", "arguments": {}}, {"name": "get_customer_profile", "arguments": {}}]
    server.rule({"tool_calls": calls}, contains="合同", tools=True, last_role="user")
    server.rule({"content": "已为您查询。"}, last_role="tool")


def seen_by_the_model(server) -> tuple[str, set[str], list[str]]:
    """(system prompt, tools offered, tool results) of the decision's LLM calls."""
    first, *rest = llm_requests(server)
    offered = {tool["function"]["name"] for tool in first.get("tools") or []}
    results = [m["content"] for body in rest for m in body["messages"] if m["role"] == "tool"]
    return first["messages"][0]["content"], offered, results


@pytest.mark.parametrize("impostor", IMPOSTORS, ids=list(IMPOSTORS))
def test_an_impostor_gets_no_erp_data_until_a_supervisor_confirms(world, server, impostor):
    chat_type, chat_name, sender = IMPOSTORS[impostor]
    manager.switch_engine("chat")
    conversation = ConversationFactory(agent=world.conversation.agent, chat_name=chat_name, chat_type=chat_type)

    for text in ("我签的合同现在什么状态？金额多少？", "再查一次合同"):  # first sight, then a known contact
        server.reset()
        ask_for_contracts(server)

        reply = decide(conversation, sender, text)

        system, offered, results = seen_by_the_model(server)
        assert "本会话尚未绑定 ERP 客户" in system and "客户名称：" not in system
        assert not offered & CUSTOMER_TOOLS
        assert all(call["ok"] is False for call in reply.tool_calls if call["name"] in CUSTOMER_TOOLS)
        for leaked in VICTIM_DATA:
            assert not any(leaked in result for result in results), leaked
            assert leaked not in reply.content
    binding = WeChatBinding.objects.get(chat_name=chat_name, sender=sender)
    assert (binding.status, binding.customer) == ("suggested", world.customer)
    assert binding.source == ("group_member" if chat_type == "group" else "sender")

    supervisor = User.objects.create_user("zhuguan", is_staff=True)
    assert customers.confirm(WeChatBinding.objects.filter(pk=binding.pk), supervisor) == 1
    server.reset()
    ask_for_contracts(server)

    reply = decide(conversation, sender, "那我的合同呢？")

    system, offered, results = seen_by_the_model(server)
    assert "客户名称：重庆易充物流有限公司" in system
    assert offered >= CUSTOMER_TOOLS
    contracts = json.loads(results[0])["contracts"]
    assert [(c["number"], c["amount"]) for c in contracts] == [("HT-2026-0501", "86000.00")]
    assert "HT-2026-0902" not in "".join(results)  # still only the confirmed customer's own contracts
    assert [(call["name"], call["ok"]) for call in reply.tool_calls] == [
        ("list_contracts", True),
        ("get_customer_profile", True),
    ]
    confirmation = BindingChange.objects.get(binding=binding, action="confirm")
    assert (confirmation.actor, confirmation.from_status, confirmation.to_status) == (supervisor, "suggested", "bound")
    assert confirmation.to_customer == world.customer


def test_a_rejected_suggestion_stays_locked(world, server):
    manager.switch_engine("chat")
    ask_for_contracts(server)
    conversation = ConversationFactory(agent=world.conversation.agent, chat_name="K1001-假冒", chat_type="private")
    decide(conversation, "K1001-假冒", "你好")
    customers.reject(WeChatBinding.objects.filter(sender="K1001-假冒"), User.objects.create_user("zhuguan"))
    server.reset()
    ask_for_contracts(server)

    decide(conversation, "K1001-假冒", "我的合同呢")

    system, offered, results = seen_by_the_model(server)
    assert "客户名称：" not in system and not offered & CUSTOMER_TOOLS
    assert not any("HT-2026-0501" in result for result in results)
