"""A change to the knowledge base reaches every process's index: at once in the one that made it,
through the Redis version in the others; a big index is rebuilt while the previous one answers."""

import time

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from apps.core import redis
from apps.knowledge import services
from apps.knowledge.models import CustomWord, Entry, Synonym

from .conftest import search
from .factories import CustomWordFactory, EntryFactory, SynonymFactory


def best(query: str) -> int | None:
    hit = search(query, k=1, hybrid=False).best
    return hit.entry_id if hit else None


def test_synonyms_and_custom_words_apply_at_index_and_query_time(faq_kb):
    before = search("包换期", k=1, hybrid=False)
    assert "质保" not in before.terms
    SynonymFactory(terms="质保 = 包换期")
    after = search("包换期", k=1, hybrid=False)
    assert "质保" in after.terms and after.best.entry_id == faq_kb["warranty-period"]

    assert "星充宝" not in search("星充宝怎么样", hybrid=False).terms  # jieba splits the product name
    word = CustomWordFactory(word="星充宝")
    assert "星充宝" in search("星充宝怎么样", hybrid=False).terms
    services.delete_dictionary_items(CustomWord.objects.filter(pk=word.pk))
    assert "星充宝" not in search("星充宝怎么样", hybrid=False).terms


def test_edits_are_seen_by_this_process_at_once(faq_kb, settings):
    settings.KNOWLEDGE_VERSION_CHECK_MS = 60_000  # no version check needed for our own writes
    entry = Entry.objects.get(id=faq_kb["ebike"])
    entry.answer += " 电动摩托车也不支持。"
    services.save_entry(entry)
    assert search("电动摩托车", k=1, hybrid=False).best.entry_id == entry.id
    entry.enabled = False
    services.save_entry(entry)
    assert entry.id not in [h.entry_id for h in search("电动摩托车", k=5, hybrid=False).hits]
    added = EntryFactory(question="充电桩能接光伏吗？", answer="可以，需要加装储能逆变器。")
    assert search("光伏", k=1, hybrid=False).best.entry_id == added.id
    services.delete_entries(added)
    assert search("光伏", k=1, hybrid=False).best is None


def test_another_process_change_is_picked_up_through_the_redis_version(faq_kb, settings):
    settings.KNOWLEDGE_VERSION_CHECK_MS = 60_000
    search("质保", hybrid=False)
    built = services.INDEX.peek()
    # Another process edits an entry (not through this process's services) and publishes a new version.
    Entry.objects.filter(id=faq_kb["ebike"]).update(question="能给平衡车充电吗？")
    assert best("平衡车") != faq_kb["ebike"]
    redis.client().set(services.INDEX.version_key, "from-another-process")
    assert best("平衡车") != faq_kb["ebike"] and services.INDEX.peek() is built  # at most once per interval
    settings.KNOWLEDGE_VERSION_CHECK_MS = 0
    assert best("平衡车") == faq_kb["ebike"]
    assert services.INDEX.peek() is not built and services.INDEX.peek().version == "from-another-process"


def test_a_large_index_is_rebuilt_in_the_background_while_the_old_one_answers(faq_kb, monkeypatch):
    monkeypatch.setattr(services, "SYNC_REBUILD_MAX_ENTRIES", 10)  # the FAQ's 61 entries count as "large"
    old = search("平衡车", k=1, hybrid=False)
    built = services.INDEX.peek()
    entry = Entry.objects.get(id=faq_kb["ebike"])
    entry.question = "能给平衡车充电吗？"
    services.save_entry(entry)
    during = search("平衡车", k=1, hybrid=False)  # answered at once, from the previous index
    assert [h.entry_id for h in during.hits] == [h.entry_id for h in old.hits]
    deadline = time.monotonic() + 10
    while services.INDEX.peek() is built:
        assert time.monotonic() < deadline, "the index was not rebuilt"
        time.sleep(0.05)
    assert search("平衡车", k=1, hybrid=False).best.entry_id == faq_kb["ebike"]


def test_a_failed_rebuild_keeps_the_previous_index_and_is_retried(faq_kb, monkeypatch):
    search("质保", hybrid=False)
    built = services.INDEX.peek()
    real = services._index_rows
    monkeypatch.setattr(services, "_index_rows", lambda: 1 / 0)
    services.save_dictionary_item(Synonym(terms="质保 = 包换期"))
    with pytest.raises(ZeroDivisionError):
        search("包换期", hybrid=False)  # a small index is rebuilt by the query that notices: it says so
    assert services.INDEX.peek() is built
    monkeypatch.setattr(services, "_index_rows", real)
    assert "质保" in search("包换期", hybrid=False).terms


def test_rebuilding_reuses_token_lists(faq_kb):
    search("质保", hybrid=False)
    analyzer = services._state.analyzer
    cached = len(analyzer._doc_cache)
    EntryFactory(question="新问题：充电桩能接光伏吗？", answer="可以，需要加装储能逆变器。")
    search("光伏", hybrid=False)
    assert services._state.analyzer is analyzer and len(analyzer._doc_cache) == cached + 2


@pytest.fixture
def staff(client, transactional_db):
    client.force_login(get_user_model().objects.create_superuser("boss", password="pw-123456"))
    return client


def test_admin_actions_change_what_customers_get(staff, faq_kb, enqueued):
    changelist = reverse("admin:knowledge_entry_changelist")
    ebike = faq_kb["ebike"]
    assert search("电瓶车", k=1, hybrid=False).best.entry_id == ebike

    staff.post(changelist, {"action": "disable", "_selected_action": [ebike]})
    assert ebike not in [h.entry_id for h in search("电瓶车", k=5, hybrid=False).hits]
    staff.post(changelist, {"action": "enable", "_selected_action": [ebike]})
    assert search("电瓶车", k=1, hybrid=False).best.entry_id == ebike

    staff.post(changelist, {"action": "reembed", "_selected_action": [ebike]})
    assert enqueued == [("knowledge.embed_entries", ([ebike],))]

    change = reverse("admin:knowledge_entry_change", args=[ebike])
    data = {
        "question": "能给电动滑板车充电吗？",
        "answer": "不支持。",
        "version": "",
        "section": "",
        "tags": "[]",
        "enabled": "on",
    }
    assert staff.post(change, data).status_code == 302
    assert search("滑板车", k=1, hybrid=False).best.entry_id == ebike
    assert enqueued[-1] == ("knowledge.embed_entries", ([ebike],))

    delete = {"action": "delete_selected", "_selected_action": [ebike], "post": "yes"}
    assert staff.post(changelist, delete).status_code == 302
    assert ebike not in [h.entry_id for h in search("滑板车", k=5, hybrid=False).hits]


def test_admin_dictionary_edits_apply_to_the_next_question(staff, faq_kb):
    add = reverse("admin:knowledge_synonym_add")
    assert staff.post(add, {"terms": "质保 = 包换期", "enabled": "on"}).status_code == 302
    assert search("包换期", k=1, hybrid=False).best.entry_id == faq_kb["warranty-period"]
    synonym = Synonym.objects.get(terms="质保 = 包换期")
    delete = reverse("admin:knowledge_synonym_delete", args=[synonym.pk])
    assert staff.post(delete, {"post": "yes"}).status_code == 302
    assert "质保" not in search("包换期", k=1, hybrid=False).terms
