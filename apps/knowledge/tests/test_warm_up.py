"""Workers load the index and jieba's dictionary at start, not on the first customer question."""

import time

from apps.knowledge import services
from apps.knowledge.tests.conftest import paraphrases, search


def test_warm_up_builds_the_index_and_loads_the_tokenizer(faq_kb):
    assert services.INDEX.peek() is None

    assert services.warm_up() is True

    index = services.INDEX.peek()
    assert index is not None and index.size == len(faq_kb)
    assert index.analyzer._initialised  # jieba's dictionary is loaded
    question = paraphrases()[0][1]
    started = time.perf_counter()
    assert search(question).hits
    assert time.perf_counter() - started < 0.5  # nothing left to load


def test_warm_up_in_background_is_switched_by_the_setting(settings):
    settings.KNOWLEDGE_WARM_ON_START = False
    assert services.warm_up_in_background() is None


def test_a_worker_warms_the_knowledge_index_at_start(live_env, tmp_path):
    from apps.core.testing import running, start_worker

    worker = start_worker({**live_env, "KNOWLEDGE_WARM_ON_START": "1"}, tmp_path)
    with running(worker):
        deadline = time.monotonic() + 30
        while "knowledge index warmed" not in worker.log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.2)
    assert "knowledge warm-up failed" not in worker.log_path.read_text(errors="replace")


def test_a_failed_warm_up_is_logged_and_the_first_query_builds_the_index(faq_kb, monkeypatch, caplog):
    real = services._index_rows
    monkeypatch.setattr(services, "_index_rows", lambda: 1 / 0)
    assert services.warm_up() is False
    assert "knowledge warm-up failed" in caplog.text
    monkeypatch.setattr(services, "_index_rows", real)
    assert search("充电桩质保多久").hits
