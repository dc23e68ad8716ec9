import json

import jsonschema
import pytest

from apps.engines.tools import TOOLS, ToolContext, run_tool, tool_specs

# What an OpenAI-compatible chat API accepts as a function tool.
OPENAI_TOOL_SCHEMA = {
    "type": "object",
    "required": ["type", "function"],
    "properties": {
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "required": ["name", "description", "parameters"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                "description": {"type": "string", "minLength": 1},
                "parameters": {"type": "object", "required": ["type"], "properties": {"type": {"const": "object"}}},
            },
        },
    },
}


def test_every_tool_schema_is_a_valid_json_schema_and_openai_tool():
    specs = tool_specs(ToolContext(1, customer=object()))
    assert {spec["function"]["name"] for spec in specs} == set(TOOLS)
    for spec in specs:
        jsonschema.validate(spec, OPENAI_TOOL_SCHEMA)
        jsonschema.Draft202012Validator.check_schema(spec["function"]["parameters"])
        # No tool lets the model choose whose data it reads.
        properties = spec["function"]["parameters"].get("properties", {})
        assert not any("customer" in name for name in properties)
        assert spec["function"]["parameters"]["additionalProperties"] is False


def test_customer_tools_are_not_offered_without_a_bound_customer():
    names = {spec["function"]["name"] for spec in tool_specs(ToolContext(1))}
    assert names == {"search_knowledge", "handoff_to_human", "remember_fact"}


def context_for(world) -> ToolContext:
    return ToolContext(
        conversation_id=world.conversation.pk,
        agent_id=world.agent_id,
        chat_name=world.conversation.chat_name,
        contact=world.sender,
        customer=world.customer,
    )


@pytest.mark.django_db(transaction=True)
async def test_contracts_are_the_bound_customers(world):
    text, record = await run_tool(context_for(world), "list_contracts", "{}")
    result = json.loads(text)
    assert record["ok"] is True
    assert [contract["number"] for contract in result["contracts"]] == ["HT-2026-0501"]


@pytest.mark.django_db(transaction=True)
async def test_a_customer_id_argument_is_refused_and_reveals_nothing(world):
    context = context_for(world)
    arguments = json.dumps({"customer_id": world.other.pk})
    text, record = await run_tool(context, "list_contracts", arguments)
    assert record["ok"] is False
    assert "已拒绝" in text
    assert "HT-2026-0902" not in text and "超充站" not in text
    text, record = await run_tool(context, "get_customer_profile", json.dumps({"customer_id": world.other.pk}))
    assert record["ok"] is False and "成都竞品" not in text


@pytest.mark.django_db(transaction=True)
async def test_another_customers_contract_id_finds_nothing(world):
    context = context_for(world)
    other_id = json.dumps({"contract_id": world.other_contract.erp_id})
    text, record = await run_tool(context, "get_contract_detail", other_id)
    assert record["ok"] is False
    assert "当前客户没有这个合同" in text and "超充站" not in text
    text, record = await run_tool(context, "get_contract_detail", json.dumps({"contract_id": world.contract.erp_id}))
    assert record["ok"] is True and "HT-2026-0501" in text


@pytest.mark.django_db(transaction=True)
async def test_bad_arguments_are_refused_with_a_reason(world):
    context = context_for(world)
    for raw in ("not json", json.dumps({"contract_id": None}), json.dumps({})):
        text, record = await run_tool(context, "get_contract_detail", raw)
        assert record["ok"] is False and "参数" in text
    text, record = await run_tool(context, "drop_database", "{}")
    assert record["ok"] is False and "没有可用的工具" in text


@pytest.mark.django_db(transaction=True)
async def test_profile_masks_the_phone_number(world):
    text, record = await run_tool(context_for(world), "get_customer_profile", "{}")
    profile = json.loads(text)["customer"]
    assert profile["客户名称"] == "重庆易充物流有限公司"
    assert profile["手机"] == "138****1111"


@pytest.mark.django_db(transaction=True)
async def test_handoff_and_remember_fact(world):
    context = context_for(world)
    _, record = await run_tool(context, "handoff_to_human", json.dumps({"reason": "客户投诉安装延误"}))
    assert record["ok"] and context.handoff_reason == "客户投诉安装延误"
    _, record = await run_tool(context, "remember_fact", json.dumps({"fact": "客户的车是比亚迪汉 EV"}))
    assert record["ok"]
    from apps.engines.models import ContactFact

    fact = await ContactFact.objects.aget()
    assert (fact.contact, fact.fact) == ("张三", "客户的车是比亚迪汉 EV")
