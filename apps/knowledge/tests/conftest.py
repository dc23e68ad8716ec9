import json
from pathlib import Path

import pytest

from apps.knowledge import demo, services

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def _fresh_index():
    services.reset_index()
    yield
    services.reset_index()


@pytest.fixture
def faq_kb(db):
    """The demo FAQ, synonyms and custom words in the database; returns {faq id: entry id}."""

    class Quiet:
        def write(self, *args, **kwargs):
            pass

    demo.seed(Quiet())
    from apps.knowledge.models import Entry

    by_question = dict(Entry.objects.values_list("question", "id"))
    return {row["id"]: by_question[row["question"]] for row in demo.load_faq()["entries"]}


def paraphrases(name: str = "faq_paraphrases.json") -> list[tuple[str, str]]:
    data = json.loads((DATA / name).read_text(encoding="utf-8"))
    return [(key, text) for key, texts in data.items() if not key.startswith("_") for text in texts]
