"""The fallback chain: retries, the next model, the offline provider; embeddings likewise."""

import time

import pytest
from django.conf import settings

from apps.core import aio
from apps.llm_gateway.services import complete, embed
from apps.llm_gateway.testing import reset_gateway
from apps.llm_gateway.tests.conftest import KB_ANSWER, user_msg
from apps.llm_gateway.types import EmbeddingUnavailable, GatewayError, NoEmbeddingModel


async def test_falls_back_to_second_model_on_500s(gw):
    gw.fail("500", model="m1")
    c = await complete(user_msg())
    assert (c.provider, c.model) == ("p2", "m2")
    assert [(a.model, a.outcome) for a in c.attempts] == [("m1", "error")] * 3 + [("m2", "ok")]
    assert len(gw.requests(model="m1")) == 3  # first try + LLM_RETRIES
    await aio.drain()


async def test_falls_back_on_timeout_within_the_attempt_timeout(gw, settings):
    settings.LLM_RETRIES = 0
    gw.fail("timeout", model="m1", hang=10)
    settings.LLM_PROVIDERS["p1"]["timeout"] = 0.3
    reset_gateway()
    started = time.perf_counter()
    c = await complete(user_msg())
    assert c.model == "m2" and [a.outcome for a in c.attempts] == ["timeout", "ok"]
    assert time.perf_counter() - started < 2
    await aio.drain()


async def test_honours_retry_after_then_succeeds_on_same_model(gw):
    gw.fail("429", model="m1", times=1, retry_after=0.4)
    started = time.perf_counter()
    c = await complete(user_msg())
    assert c.model == "m1" and [a.outcome for a in c.attempts] == ["rate_limited", "ok"]
    assert time.perf_counter() - started >= 0.4
    await aio.drain()


@pytest.mark.parametrize("mode", ["malformed", "401"])
async def test_a_bad_answer_or_a_refused_key_moves_on_without_retry(gw, mode):
    gw.fail(mode, model="m1")
    c = await complete(user_msg())
    assert c.model == "m2" and [a.outcome for a in c.attempts] == ["error", "ok"]
    assert len(gw.requests(model="m1")) == 1
    await aio.drain()


async def test_the_overall_deadline_bounds_the_whole_chain(gw):
    gw.fail("timeout", hang=10)
    started = time.perf_counter()
    c = await complete(user_msg(), timeout=0.5)
    assert c.offline and c.offline_reason == "unavailable"
    assert time.perf_counter() - started < 2


async def test_offline_answers_when_every_model_fails(gw):
    gw.fail("500")
    c = await complete(user_msg("我想退货"))
    assert (c.offline, c.provider, c.content, c.offline_reason) == (True, "offline", KB_ANSWER, "unavailable")
    c = await complete(user_msg("别的问题"))
    assert c.offline and c.content == settings.LLM_OFFLINE_APOLOGY
    with pytest.raises(GatewayError):
        await complete(user_msg(), offline_fallback=False)


async def test_a_failing_offline_answerer_still_gets_the_apology(gw, settings):
    settings.LLM_OFFLINE_ANSWERER = "apps.llm_gateway.tests.conftest.broken_answerer"
    gw.fail("500")
    c = await complete(user_msg("我想退货"))
    assert c.offline and c.content == settings.LLM_OFFLINE_APOLOGY


async def test_offline_is_the_embedded_default_without_providers(gw, settings):
    settings.LLM_PROVIDERS = {}
    settings.LLM_ROUTES = {}
    reset_gateway()
    c = await complete(user_msg("我想退货"))
    assert c.offline and c.content == KB_ANSWER and c.offline_reason == "no_provider"
    assert gw.requests() == []


async def test_embed_and_its_fallback(gw):
    e = await embed(["我想退货", "我要退货"])
    assert (e.provider, e.model, len(e.vectors), len(e.vectors[0])) == ("p2", "emb", 2, 256)
    assert e.usage.input_tokens == 8 and e.cost == pytest.approx(8 * 0.001 / 1000)
    gw.fail("500", path="embeddings")
    with pytest.raises(EmbeddingUnavailable):
        await embed(["x"])
    await aio.drain()


async def test_embed_without_an_embedding_model_says_so(gw, settings):
    settings.LLM_ROUTES = {**settings.LLM_ROUTES, "embedding": []}
    reset_gateway()
    with pytest.raises(NoEmbeddingModel):
        await embed(["x"])
    assert gw.requests(path="embeddings") == []
