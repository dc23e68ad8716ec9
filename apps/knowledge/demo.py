"""Knowledge's part of seed_demo: the EV-charger FAQ, its synonyms and custom words (idempotent)."""

import json
from pathlib import Path

from django.db import transaction

from . import services
from .models import CustomWord, Document, Entry, Synonym

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_faq() -> dict:
    return json.loads((FIXTURES / "ev_charger_faq.json").read_text(encoding="utf-8"))


def load_dictionary() -> dict:
    return json.loads((FIXTURES / "ev_charger_dictionary.json").read_text(encoding="utf-8"))


def seed(stdout) -> None:
    faq, dictionary = load_faq(), load_dictionary()
    with transaction.atomic():
        for word in dictionary["custom_words"]:
            CustomWord.objects.get_or_create(word=word)
        existing = set(Synonym.objects.values_list("terms", flat=True))
        Synonym.objects.bulk_create(Synonym(terms=t) for t in dictionary["synonyms"] if t not in existing)
        document, created = Document.objects.get_or_create(
            title=faq["document"],
            kind="faq",
            defaults={"version": faq["version"], "source_name": "ev_charger_faq.json"},
        )
        if created or not document.entries.exists():
            Entry.objects.bulk_create(_entry(document, row) for row in faq["entries"])
            services.enqueue_embedding(None)
        services.INDEX.bump()
    stdout.write(
        f"knowledge: {document.entries.count()} FAQ entries, {Synonym.objects.count()} synonym groups, "
        f"{CustomWord.objects.count()} custom words"
    )


def _entry(document, row) -> Entry:
    return services.new_entry(
        document, question=row["question"], answer=row["answer"], section=row["section"], tags=row.get("tags", [])
    )
