"""Hybrid retrieval through the real gateway and the loopback OpenAI-compatible server; keyword
fallback when the embedding provider is down, absent, or slow."""

import pytest

from apps.knowledge import services
from apps.knowledge.models import Entry, Gap
from apps.llm_gateway.testing import fake_openai_server, use_fake_provider  # noqa: F401


@pytest.fixture
def embedded_kb(faq_kb, fake_openai_server, settings):  # noqa: F811
    use_fake_provider(fake_openai_server, settings)
    assert services.embed_entries() == len(faq_kb)
    return faq_kb


def test_entries_are_embedded_with_their_model(embedded_kb):
    entry = Entry.objects.get(id=embedded_kb["e04"])
    assert entry.embedding_model == "fake-embedding"
    assert entry.vector().dtype.name == "float32" and entry.vector().shape == (256,)


def test_hybrid_search_fuses_vector_and_keyword(embedded_kb, fake_openai_server, settings):  # noqa: F811
    result = services.search("报E04了怎么弄", k=3)
    assert result.path == "hybrid" and not result.fallback
    best = result.best
    assert best.entry_id == embedded_kb["e04"]
    assert best.vector_score is not None and 0 < best.vector_score <= 1
    alpha = settings.KNOWLEDGE_HYBRID_ALPHA
    assert best.score == pytest.approx(alpha * best.vector_score + (1 - alpha) * best.keyword_score, abs=1e-3)
    assert result.embed_ms > 0
    assert any(r["path"].endswith("embeddings") for r in fake_openai_server.requests())


@pytest.mark.django_db(transaction=True)  # asearch rebuilds the index on a worker thread (its own connection)
async def test_async_hybrid_search(embedded_kb):
    result = await services.asearch("充电桩质保多久", k=3)
    assert result.path == "hybrid" and result.best.entry_id == embedded_kb["warranty-period"]


def test_keyword_fallback_when_the_embedding_provider_fails(embedded_kb, fake_openai_server):  # noqa: F811
    fake_openai_server.fail("500", path="embeddings")
    result = services.search("显示E04漏电了还能用吗", k=3)
    assert result.path == "keyword" and result.fallback
    assert "embedding unavailable" in result.fallback_reason
    assert result.best.entry_id == embedded_kb["e04"] and result.best.vector_score is None
    # Within the back-off the vector path is not even tried (no latency added while the provider is down).
    calls = len(fake_openai_server.requests())
    again = services.search("E05报错是不是地线没接好", k=3)
    assert again.fallback and "recent failure" in again.fallback_reason
    assert len(fake_openai_server.requests()) == calls
    assert again.best.entry_id == embedded_kb["e05"]
    # Both questions are listed as gaps to check; a base without vectors at all is not a gap.
    assert set(Gap.objects.values_list("question", "reason")) == {
        ("显示E04漏电了还能用吗", "keyword_fallback"),
        ("E05报错是不是地线没接好", "keyword_fallback"),
    }


def test_keyword_fallback_when_no_embedding_provider_is_configured(embedded_kb, settings):
    settings.LLM_PROVIDERS = {}
    settings.LLM_ROUTES = {}
    from apps.llm_gateway.services import reset_gateway

    reset_gateway()
    result = services.search("枪拔不下来了", k=3)
    assert result.path == "keyword" and result.fallback and "embedding unavailable" in result.fallback_reason
    assert result.best.entry_id == embedded_kb["gun-stuck"]


def test_keyword_fallback_when_embedding_is_slow(embedded_kb, fake_openai_server, settings):  # noqa: F811
    settings.KNOWLEDGE_EMBED_TIMEOUT = 0.2
    fake_openai_server.configure(latency=1.0)
    result = services.search("漏保一定要装吗", k=3)
    assert result.path == "keyword" and result.fallback and result.fallback_reason == "embedding timed out"
    assert result.latency_ms < 1000


def test_index_without_vectors_says_so(faq_kb):
    result = services.search("E01", k=1)
    assert result.path == "keyword" and result.fallback and result.fallback_reason == "no embeddings in the index"
    assert not Gap.objects.exists()


def test_editing_an_entry_drops_its_stale_vector(embedded_kb):
    entry = Entry.objects.get(id=embedded_kb["noise"])
    entry.answer = "继电器吸合有咔哒声是正常的。"
    entry.save()
    entry.refresh_from_db()
    assert entry.embedding is None and entry.embedding_model == ""
    assert services.embed_entries([entry.id]) == 1
    entry.refresh_from_db()
    assert entry.embedding_model == "fake-embedding"
