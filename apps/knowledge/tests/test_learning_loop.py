"""Learning from replies: redaction, the review queue, gaps, and the embedding task."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from apps.knowledge import services
from apps.knowledge.models import Candidate, Entry, Gap

from .conftest import search
from .factories import CandidateFactory, EntryFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("我的手机 13812345678 请回电", "我的手机 [手机号] 请回电"),
        ("电话 +86 138-1234-5678", "电话 [手机号]"),
        ("身份证 11010519491231002X 号", "身份证 [身份证号] 号"),
        ("卡号 6222 0212 3456 7890 123 谢谢", "卡号 [银行卡号] 谢谢"),
        ("卡号6222021234567890", "卡号[银行卡号]"),
        ("E01 是急停，7kW 桩 32A，订单 2026112201", "E01 是急停，7kW 桩 32A，订单 2026112201"),
    ],
)
def test_redaction(text, expected):
    assert services.redact(text) == expected


def test_candidate_is_redacted_idempotent_and_approval_adds_a_searchable_entry(enqueued):
    candidate = services.propose_candidate(
        "安装师傅电话多少？我是13900001111", "请拨打 400-800-1234，或联系 13912345678", 42
    )
    assert "[手机号]" in candidate.question and "13912345678" not in candidate.answer
    assert services.propose_candidate("again", "again", 42).pk == candidate.pk  # same reply → same candidate
    assert Candidate.objects.count() == 1
    assert services.propose_candidate("", "x", 43) is None
    assert services.propose_candidate("13900001111", "x", 44) is not None  # a number alone is redacted, kept

    entry = services.approve_candidate(candidate, reviewer="supervisor")
    candidate.refresh_from_db()
    assert candidate.status == "approved" and candidate.entry_id == entry.id and candidate.reviewed_by == "supervisor"
    assert entry.document.kind == "learned" and entry.content_hash == entry.compute_hash()
    assert search("安装师傅电话", k=1, hybrid=False).best.entry_id == entry.id
    assert enqueued == [("knowledge.embed_entries", ([entry.id],))]


def test_rejected_candidates_never_reach_the_knowledge_base():
    candidate = CandidateFactory(question="能便宜点吗", answer="可以打五折")
    services.reject_candidate(candidate, reviewer="supervisor")
    candidate.refresh_from_db()
    assert candidate.status == "rejected" and candidate.entry is None
    assert not Entry.objects.exists() and search("便宜", k=1, hybrid=False).best is None


def test_gaps_are_counted_per_question():
    services.record_gap("充电桩能放在地下室吗", "keyword_fallback")
    services.record_gap("充电桩能放在地下室吗 ", "handoff")
    services.record_gap("能开发票吗", "handoff")
    assert services.record_gap("   ", "handoff") is None
    gap = Gap.objects.get(question="充电桩能放在地下室吗")
    assert gap.count == 2 and gap.reason == "handoff"
    assert Gap.objects.count() == 2


@pytest.fixture
def staff(client):
    client.force_login(get_user_model().objects.create_superuser("boss", password="pw-123456"))
    return client


def test_admin_approves_and_rejects_candidates(staff):
    approve = CandidateFactory(question="充电桩能接太阳能吗", answer="可以，需要加装储能逆变器。")
    reject = CandidateFactory(question="能便宜点吗", answer="可以打五折")
    changelist = reverse("admin:knowledge_candidate_changelist")
    assert staff.post(changelist, {"action": "approve", "_selected_action": [approve.pk]}).status_code == 302
    assert staff.post(changelist, {"action": "reject", "_selected_action": [reject.pk]}).status_code == 302
    approve.refresh_from_db()
    reject.refresh_from_db()
    assert (approve.status, reject.status) == ("approved", "rejected")
    assert search("太阳能", k=1, hybrid=False).best.entry_id == approve.entry_id
    # An approved candidate is not approved twice.
    staff.post(changelist, {"action": "approve", "_selected_action": [approve.pk, reject.pk]})
    assert Entry.objects.count() == 1


def test_embedding_task_is_quiet_without_an_embedding_model_and_retries_when_one_fails(monkeypatch):
    from celery.exceptions import Retry

    from apps.knowledge.tasks import embed_entries_task
    from apps.llm_gateway.types import EmbeddingUnavailable, NoEmbeddingModel

    EntryFactory(question="7kW 交流桩用多粗的线？", answer="6 平方铜线。")

    async def no_model(*args, **kwargs):
        raise NoEmbeddingModel("no embedding model configured for route 'embedding'")

    monkeypatch.setattr(services, "embed_entries", no_model)
    assert embed_entries_task.apply().get() == 0  # embedded default: nothing to retry

    async def provider_down(*args, **kwargs):
        raise EmbeddingUnavailable("no embedding model answered: qwen/text-embedding-v3 error")

    monkeypatch.setattr(services, "embed_entries", provider_down)
    with pytest.raises(Retry):
        embed_entries_task.apply(throw=True).get()
