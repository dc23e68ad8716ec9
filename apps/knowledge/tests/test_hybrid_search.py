"""Hybrid retrieval through the real gateway and the loopback OpenAI-compatible server; keyword
fallback when the embedding provider is down, absent, or slow; the admin's 试一试 page."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from apps.core import aio
from apps.knowledge import services
from apps.knowledge.models import Entry, Gap
from apps.llm_gateway.testing import fake_openai_server, use_fake_provider  # noqa: F401

from .conftest import search


@pytest.fixture
def embedded_kb(faq_kb, fake_openai_server, settings):  # noqa: F811
    use_fake_provider(fake_openai_server, settings)
    assert aio.run(services.embed_entries()) == len(faq_kb)
    return faq_kb


def gaps_written() -> set[tuple[str, str]]:
    aio.run(aio.drain())  # gaps are written in the background, off the answer's path
    return set(Gap.objects.values_list("question", "reason"))


def test_entries_are_embedded_with_their_model(embedded_kb):
    entry = Entry.objects.get(id=embedded_kb["e04"])
    assert entry.embedding_model == "fake-embedding"
    assert entry.vector().dtype.name == "float32" and entry.vector().shape == (256,)
    assert aio.run(services.embed_entries()) == 0  # nothing left without a vector


def test_hybrid_search_fuses_vector_and_keyword(embedded_kb, fake_openai_server, settings):  # noqa: F811
    result = search("报E04了怎么弄", k=3)
    assert result.path == "hybrid" and not result.fallback
    best = result.best
    assert best.entry_id == embedded_kb["e04"]
    assert best.vector_score is not None and 0 < best.vector_score <= 1
    alpha = settings.KNOWLEDGE_HYBRID_ALPHA
    assert best.score == pytest.approx(alpha * best.vector_score + (1 - alpha) * best.keyword_score, abs=1e-3)
    assert result.embed_ms > 0
    assert any(r["path"].endswith("embeddings") for r in fake_openai_server.requests())


async def test_hybrid_search_from_async_code(embedded_kb):
    result = await services.search("充电桩质保多久", k=3)
    assert result.path == "hybrid" and result.best.entry_id == embedded_kb["warranty-period"]


def test_keyword_fallback_when_the_embedding_provider_fails(embedded_kb, fake_openai_server):  # noqa: F811
    fake_openai_server.fail("500", path="embeddings")
    result = search("显示E04漏电了还能用吗", k=3)
    assert result.path == "keyword" and result.fallback
    assert "embedding unavailable" in result.fallback_reason
    assert result.best.entry_id == embedded_kb["e04"] and result.best.vector_score is None
    # Within the back-off the vector path is not even tried (no latency added while the provider is down).
    calls = len(fake_openai_server.requests())
    again = search("E05报错是不是地线没接好", k=3)
    assert again.fallback and "recent failure" in again.fallback_reason
    assert len(fake_openai_server.requests()) == calls
    assert again.best.entry_id == embedded_kb["e05"]
    # Both questions are listed as gaps to check; a base without vectors at all is not a gap.
    assert gaps_written() == {
        ("显示E04漏电了还能用吗", "keyword_fallback"),
        ("E05报错是不是地线没接好", "keyword_fallback"),
    }


def test_keyword_fallback_when_no_embedding_provider_is_configured(embedded_kb, settings):
    settings.LLM_PROVIDERS = {}
    settings.LLM_ROUTES = {}
    from apps.llm_gateway.testing import reset_gateway

    reset_gateway()
    result = search("枪拔不下来了", k=3)
    assert result.path == "keyword" and result.fallback and "embedding unavailable" in result.fallback_reason
    assert result.best.entry_id == embedded_kb["gun-stuck"]


def test_keyword_fallback_when_embedding_is_slow(embedded_kb, fake_openai_server, settings):  # noqa: F811
    settings.KNOWLEDGE_EMBED_TIMEOUT = 0.2
    fake_openai_server.configure(latency=1.0)
    result = search("漏保一定要装吗", k=3)
    assert result.path == "keyword" and result.fallback and result.fallback_reason == "embedding timed out"
    assert result.latency_ms < 1000


def test_index_without_vectors_says_so_and_records_no_gap(faq_kb):
    result = search("E01", k=1)
    assert result.path == "keyword" and result.fallback and result.fallback_reason == "no embeddings in the index"
    assert gaps_written() == set()


def test_editing_an_entry_drops_its_stale_vector_and_queues_it(embedded_kb, enqueued):
    entry = Entry.objects.get(id=embedded_kb["noise"])
    entry.section = "使用"
    services.save_entry(entry)  # same text: the vector still describes it
    entry.refresh_from_db()
    assert entry.embedding_model == "fake-embedding" and enqueued == []

    entry.answer = "继电器吸合有咔哒声是正常的。"
    services.save_entry(entry)
    entry.refresh_from_db()
    assert entry.embedding is None and entry.embedding_model == ""
    assert enqueued == [("knowledge.embed_entries", ([entry.id],))]
    assert aio.run(services.embed_entries([entry.id])) == 1
    entry.refresh_from_db()
    assert entry.embedding_model == "fake-embedding"


def test_a_vector_of_a_text_edited_meanwhile_is_not_stored(embedded_kb, fake_openai_server):  # noqa: F811
    entry = Entry.objects.get(id=embedded_kb["noise"])
    Entry.objects.filter(pk=entry.pk).update(embedding=None, embedding_model="")
    pending = services._entries_to_embed([entry.pk], False)
    entry.answer = "改过的答案。"
    services.save_entry(entry)  # the edit lands while the old text is being embedded
    assert services._store_vectors(pending, "fake-embedding", [[0.1] * 256]) == 0
    entry.refresh_from_db()
    assert entry.embedding is None


@pytest.fixture
def staff(client, transactional_db):
    client.force_login(get_user_model().objects.create_superuser("boss", password="pw-123456"))
    return client


def test_admin_try_page_shows_hits_scores_and_path(staff, faq_kb):
    url = reverse("admin:knowledge_entry_try")
    page = staff.get(url, {"query": "E01是什么意思", "k": 3, "mode": "hybrid"})
    html = page.content.decode()
    assert page.status_code == 200
    assert "报警码 E01 是什么意思" in html and 'class="hit"' in html
    assert "检索路径：<strong>关键词</strong>" in html and "no embeddings in the index" in html
    empty = staff.get(url, {"query": "今天天气", "k": 3, "mode": "keyword"}).content.decode()
    assert 'id="no-hits"' in empty or 'class="hit"' in empty
    assert staff.get(reverse("admin:knowledge_entry_changelist")).status_code == 200


def test_admin_try_page_refuses_bad_input_without_searching(staff, faq_kb):
    page = staff.get(reverse("admin:knowledge_entry_try"), {"query": "E01", "k": 0, "mode": "magic"})
    html = page.content.decode()
    assert page.status_code == 200 and 'id="search-path"' not in html and "errorlist" in html
