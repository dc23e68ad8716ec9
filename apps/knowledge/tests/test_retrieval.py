"""Retrieval on the EV-charger FAQ: keyword accuracy, empty base, citations, invalidation, dictionary."""

import time

import jieba
import pytest
from django.core.cache import cache
from rank_bm25 import BM25Okapi

from apps.knowledge import demo, services
from apps.knowledge.models import CustomWord, Entry, Synonym

from .conftest import paraphrases


def _accuracy(faq_kb, name):
    cases = paraphrases(name)
    top1 = top3 = 0
    misses = []
    for key, text in cases:
        result = services.search(text, k=3, hybrid=False)
        ids = [h.entry_id for h in result.hits]
        top1 += bool(ids) and ids[0] == faq_kb[key]
        top3 += faq_kb[key] in ids
        if not ids or ids[0] != faq_kb[key]:
            misses.append((key, text))
    return top1 / len(cases), top3 / len(cases), len(cases), misses


def test_faq_is_big_enough():
    faq = demo.load_faq()["entries"]
    assert len(faq) >= 50
    keys = {key for key, _ in paraphrases()}
    assert keys == {row["id"] for row in faq}
    assert len(paraphrases()) >= 2 * len(faq)


def test_keyword_path_puts_the_right_entry_first(faq_kb):
    top1, top3, n, misses = _accuracy(faq_kb, "faq_paraphrases.json")
    print(f"keyword path on {n} paraphrases: top-1 {top1:.1%}, top-3 {top3:.1%}; misses {misses}")
    assert top1 >= 0.90, misses
    assert top3 >= 0.97, misses


def test_keyword_path_on_held_out_wording(faq_kb):
    """A third paraphrase per entry never used to tune the dictionary (measured 91.8 % / 98.4 %)."""
    top1, top3, n, misses = _accuracy(faq_kb, "faq_holdout.json")
    print(f"keyword path on {n} held-out paraphrases: top-1 {top1:.1%}, top-3 {top3:.1%}; misses {misses}")
    assert top1 >= 0.88, misses
    assert top3 >= 0.95, misses


def test_plain_jieba_bm25_baseline_is_clearly_worse(faq_kb):
    """The issue's baseline: rank-bm25 over plain jieba tokens of question + answer."""
    entries = list(Entry.objects.order_by("id"))
    bm25 = BM25Okapi([jieba.lcut(f"{e.question} {e.answer}") for e in entries])
    cases = paraphrases()
    top1 = top3 = 0
    for key, text in cases:
        scores = bm25.get_scores(jieba.lcut(text))
        order = sorted(range(len(entries)), key=lambda i: -scores[i])[:3]
        ids = [entries[i].id for i in order]
        top1 += ids[0] == faq_kb[key]
        top3 += faq_kb[key] in ids
    plain1, plain3 = top1 / len(cases), top3 / len(cases)
    ours1, ours3, _, _ = _accuracy(faq_kb, "faq_paraphrases.json")
    print(f"plain jieba BM25: top-1 {plain1:.1%}, top-3 {plain3:.1%}; ours {ours1:.1%} / {ours3:.1%}")
    assert ours1 > plain1 + 0.05 and ours3 > plain3


def test_empty_knowledge_base_returns_nothing(db):
    result = services.search("充电桩质保多久", k=5)
    assert result.hits == [] and result.best is None
    assert result.path == "keyword" and not result.fallback
    assert services.offline_answer([{"role": "user", "content": "充电桩质保多久"}]) is None


@pytest.mark.django_db(transaction=True)
async def test_empty_knowledge_base_async():
    result = await services.asearch("E01 是什么意思", k=3)
    assert result.hits == []


def test_hits_carry_citation_and_calibrated_scores(faq_kb):
    result = services.search("E05 报警怎么处理", k=3, hybrid=False)
    best = result.best
    assert best.entry_id == faq_kb["e05"]
    assert best.citation == {
        "entry_id": best.entry_id,
        "document": "充电桩常见问题",
        "version": "2026.11",
        "section": "报警码",
    }
    assert all(0 < h.score <= 1 for h in result.hits)
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    assert best.vector_score is None and result.path == "keyword"
    unrelated = services.search("今天天气怎么样", k=3, hybrid=False)
    assert all(h.score < 0.2 for h in unrelated.hits)


def test_offline_answer_uses_threshold(faq_kb, settings):
    answer = services.offline_answer(
        [{"role": "system", "content": "x"}, {"role": "user", "content": "充电桩质保多久"}]
    )
    assert answer and "3 年" in answer
    assert services.offline_answer([{"role": "user", "content": "今天天气怎么样"}]) is None
    settings.KNOWLEDGE_OFFLINE_MIN_SCORE = 0.99
    assert services.offline_answer([{"role": "user", "content": "充电桩质保多久"}]) is None


def test_synonyms_and_custom_words_apply_at_index_and_query_time(faq_kb):
    before = services.search("包换期", k=1, hybrid=False)
    assert "质保" not in before.terms
    Synonym.objects.create(terms="质保 = 包换期")  # a signal bumps the index version
    after = services.search("包换期", k=1, hybrid=False)
    assert "质保" in after.terms and after.best.entry_id == faq_kb["warranty-period"]

    assert "星充宝" not in services.search("星充宝怎么样", hybrid=False).terms  # jieba splits the product name
    CustomWord.objects.create(word="星充宝")
    assert "星充宝" in services.search("星充宝怎么样", hybrid=False).terms


def test_edits_are_seen_by_this_process_at_once(faq_kb):
    entry = Entry.objects.get(id=faq_kb["ebike"])
    entry.answer += " 电动摩托车也不支持。"
    entry.save()
    assert services.search("电动摩托车", k=1, hybrid=False).best.entry_id == entry.id
    entry.enabled = False
    entry.save()
    assert entry.id not in [h.entry_id for h in services.search("电动摩托车", k=5, hybrid=False).hits]


def test_another_process_change_is_picked_up_through_the_redis_version(faq_kb, settings):
    settings.KNOWLEDGE_VERSION_CHECK_MS = 60_000
    services.search("质保", hybrid=False)
    built = services._state.index
    # Another process edits an entry (no signal here) and publishes a new version.
    Entry.objects.filter(id=faq_kb["ebike"]).update(question="能给平衡车充电吗？")
    assert services.search("平衡车", hybrid=False).best is None or services._state.index is built
    cache.set(services.VERSION_KEY, "from-another-process", timeout=None)
    assert services._state.index is built  # not checked yet: at most once per interval
    settings.KNOWLEDGE_VERSION_CHECK_MS = 0
    assert services.search("平衡车", k=1, hybrid=False).best.entry_id == faq_kb["ebike"]
    assert services._state.index is not built and services._state.index.version == "from-another-process"


def test_search_is_deterministic(faq_kb):
    first = services.search("充电桩怎么安装", k=5, hybrid=False)
    second = services.search("充电桩怎么安装", k=5, hybrid=False)
    assert [(h.entry_id, h.score) for h in first.hits] == [(h.entry_id, h.score) for h in second.hits]


@pytest.mark.parametrize(
    "text, code", [("显示E1", "e01"), ("ｅ０５报警", "e05"), ("e 10 离线", "e10"), ("7千瓦", "7kw")]
)
def test_normalisation(text, code):
    from apps.knowledge.text import normalize

    assert code in normalize(text)


@pytest.mark.django_db(transaction=True)
def test_a_large_index_is_rebuilt_in_the_background_while_the_old_one_answers(faq_kb, monkeypatch):
    monkeypatch.setattr(services, "SYNC_REBUILD_MAX_ENTRIES", 10)  # the FAQ's 61 entries count as "large"
    old = services.search("平衡车", k=1, hybrid=False)
    built = services._state.index
    Entry.objects.filter(id=faq_kb["ebike"]).update(question="能给平衡车充电吗？")
    services.bump_version()
    during = services.search("平衡车", k=1, hybrid=False)  # answered at once, from the previous index
    assert [h.entry_id for h in during.hits] == [h.entry_id for h in old.hits]
    for _ in range(200):
        if not services._rebuilding.is_set() and services._state.index is not built:
            break
        time.sleep(0.05)
    assert services.search("平衡车", k=1, hybrid=False).best.entry_id == faq_kb["ebike"]


def test_rebuilding_reuses_token_lists(faq_kb):
    services.search("质保", hybrid=False)
    analyzer = services._state.analyzer
    cached = len(analyzer._doc_cache)
    Entry.objects.create(question="新问题：充电桩能接光伏吗？", answer="可以，需要加装储能逆变器。")
    services.search("光伏", hybrid=False)
    assert services._state.analyzer is analyzer and len(analyzer._doc_cache) == cached + 2
