"""Knowledge test data, written through the knowledge services (so the index is bumped, as in admin)."""

import factory

from apps.knowledge import services
from apps.knowledge.models import Candidate, CustomWord, Document, Entry, Synonym


class DocumentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Document

    title = factory.Sequence(lambda n: f"文档{n}")
    version = "v1"
    kind = "manual"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return services.save_document(model_class(*args, **kwargs))


class EntryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Entry

    question = factory.Sequence(lambda n: f"问题{n}")
    answer = factory.Sequence(lambda n: f"答案{n}")
    document = None

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return services.save_entry(model_class(*args, **kwargs))


class DictionaryFactory(factory.django.DjangoModelFactory):
    class Meta:
        abstract = True

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        item = model_class(*args, **kwargs)
        services.save_dictionary_item(item)
        return item


class SynonymFactory(DictionaryFactory):
    class Meta:
        model = Synonym

    terms = "质保 = 保修"


class CustomWordFactory(DictionaryFactory):
    class Meta:
        model = CustomWord

    word = factory.Sequence(lambda n: f"词{n}")


class CandidateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Candidate

    question = factory.Sequence(lambda n: f"候选问题{n}")
    answer = "候选答案"
    source_reply_id = factory.Sequence(lambda n: f"r-{n}")
