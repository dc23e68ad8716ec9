"""The offline answer: what the gateway's offline provider says when no model answers (keyword
search only, no LLM and no embedding call)."""

import pytest
from django.conf import settings
from django.utils.module_loading import import_string

from apps.knowledge import services

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_best_entry_answers_when_it_clears_the_threshold(faq_kb, settings):
    answer = await services.offline_answer(
        [{"role": "system", "content": "x"}, {"role": "user", "content": "充电桩质保多久"}]
    )
    assert answer and "3 年" in answer
    settings.KNOWLEDGE_OFFLINE_MIN_SCORE = 0.99
    assert await services.offline_answer([{"role": "user", "content": "充电桩质保多久"}]) is None


async def test_the_last_user_message_is_the_question_in_any_message_shape(faq_kb):
    class Message:
        role, content = "user", "E01 是什么意思"

    parts = [{"type": "text", "text": "充电桩"}, {"type": "text", "text": "质保多久"}]
    assert "3 年" in await services.offline_answer([{"role": "user", "content": parts}])
    assert "急停" in await services.offline_answer([Message()])
    answered = await services.offline_answer(
        [{"role": "user", "content": "充电桩质保多久"}, {"role": "assistant", "content": "E01 是急停"}]
    )
    assert "3 年" in answered


async def test_no_answer_for_an_unrelated_question_an_empty_one_or_an_empty_base(faq_kb):
    assert await services.offline_answer([{"role": "user", "content": "今天天气怎么样"}]) is None
    assert await services.offline_answer([{"role": "user", "content": "  "}]) is None
    assert await services.offline_answer([{"role": "assistant", "content": "您好"}]) is None
    assert await services.offline_answer([]) is None


async def test_an_empty_knowledge_base_has_no_offline_answer():
    assert await services.offline_answer([{"role": "user", "content": "充电桩质保多久"}]) is None


def test_the_gateway_is_configured_to_ask_the_knowledge_base():
    assert import_string(settings.LLM_OFFLINE_ANSWERER) is services.offline_answer
