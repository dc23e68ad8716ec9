"""Keyword retrieval on the EV-charger FAQ: the right entry first, calibrated scores, citations."""

import jieba
import pytest
from rank_bm25 import BM25Okapi

from apps.knowledge import demo, services
from apps.knowledge.models import Entry
from apps.knowledge.text import normalize

from .conftest import paraphrases, search


def _accuracy(faq_kb, name):
    cases = paraphrases(name)
    top1 = top3 = 0
    misses = []
    for key, text in cases:
        ids = [h.entry_id for h in search(text, k=3, hybrid=False).hits]
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


def test_hits_carry_citation_and_calibrated_scores(faq_kb):
    result = search("E05 报警怎么处理", k=3, hybrid=False)
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


def test_an_unrelated_or_empty_question_finds_nothing_relevant(faq_kb):
    assert all(h.score < 0.2 for h in search("今天天气怎么样", k=3, hybrid=False).hits)
    for blank in ("", "   "):
        result = search(blank, k=3)
        assert result.hits == [] and not result.fallback
    assert search("？！。", k=3).hits == []


@pytest.mark.django_db(transaction=True)
async def test_empty_knowledge_base_returns_nothing():
    result = await services.search("充电桩质保多久", k=5)
    assert result.hits == [] and result.best is None
    assert result.path == "keyword" and not result.fallback


def test_search_is_deterministic(faq_kb):
    first = search("充电桩怎么安装", k=5, hybrid=False)
    second = search("充电桩怎么安装", k=5, hybrid=False)
    assert [(h.entry_id, h.score) for h in first.hits] == [(h.entry_id, h.score) for h in second.hits]


@pytest.mark.parametrize(
    "text, code", [("显示E1", "e01"), ("ｅ０５报警", "e05"), ("e 10 离线", "e10"), ("7千瓦", "7kw")]
)
def test_normalisation(text, code):
    assert code in normalize(text)
