import io
import json
from pathlib import Path

import pytest

from apps.core import aio
from apps.knowledge import demo, services
from apps.knowledge.models import Entry

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def _fresh_index():
    def forget():
        services.INDEX.forget()
        services._query_vectors.clear()
        services._state.embed_down_until = 0.0

    forget()
    yield
    forget()


@pytest.fixture
def faq_kb(transactional_db):
    """The demo FAQ, synonyms and custom words in the database; returns {faq id: entry id}."""
    demo.seed(io.StringIO())
    by_question = dict(Entry.objects.values_list("question", "id"))
    return {row["id"]: by_question[row["question"]] for row in demo.load_faq()["entries"]}


@pytest.fixture
def enqueued(monkeypatch):
    """Tasks enqueued by name (after commit), as (name, args) pairs, instead of sending them."""
    from django.db import transaction

    from apps.core import jobs

    sent = []
    monkeypatch.setattr(
        jobs, "enqueue", lambda name, *args, **kwargs: transaction.on_commit(lambda: sent.append((name, args)))
    )
    return sent


def search(query: str, **kwargs):
    """`services.search` from a sync test, as admin and commands call it."""
    return aio.run(services.search(query, **kwargs))


def paraphrases(name: str = "faq_paraphrases.json") -> list[tuple[str, str]]:
    data = json.loads((DATA / name).read_text(encoding="utf-8"))
    return [(key, text) for key, texts in data.items() if not key.startswith("_") for text in texts]
