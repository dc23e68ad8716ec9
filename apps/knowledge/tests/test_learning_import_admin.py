"""Learning loop (redaction, review queue, gaps), document import and chunking, admin pages."""

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from apps.knowledge import services
from apps.knowledge.models import Candidate, Document, Entry, Gap


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


def test_candidate_is_redacted_idempotent_and_approval_adds_a_searchable_entry(db):
    candidate = services.propose_candidate(
        "安装师傅电话多少？我是13900001111", "请拨打 400-800-1234，或联系 13912345678", 42
    )
    assert "[手机号]" in candidate.question and "13912345678" not in candidate.answer
    assert services.propose_candidate("again", "again", 42).pk == candidate.pk  # same reply → same candidate
    assert Candidate.objects.count() == 1
    assert services.propose_candidate("", "x", 43) is None

    entry = services.approve_candidate(candidate, reviewer="supervisor")
    candidate.refresh_from_db()
    assert candidate.status == "approved" and candidate.entry_id == entry.id and candidate.reviewed_by == "supervisor"
    assert entry.document.kind == "learned"
    assert services.search("安装师傅电话", k=1, hybrid=False).best.entry_id == entry.id


def test_gaps_are_counted_per_question(db):
    services.record_gap("充电桩能放在地下室吗", "keyword_fallback")
    services.record_gap("充电桩能放在地下室吗 ", "handoff")
    services.record_gap("能开发票吗", "handoff")
    gap = Gap.objects.get(question="充电桩能放在地下室吗")
    assert gap.count == 2 and gap.reason == "handoff"
    assert Gap.objects.count() == 2


def test_chunking_respects_size_and_overlap():
    text = "".join(f"第{i}句话讲的是充电桩的第{i}个知识点。" for i in range(40))
    chunks = services.chunk_text(text, size=100, overlap=30)
    assert len(chunks) > 5
    assert all(len(c) <= 100 for c in chunks)
    for previous, current in zip(chunks, chunks[1:], strict=False):
        last_sentence = services.split_sentences(previous)[-1]
        assert current.startswith(last_sentence)  # the overlap carries the previous chunk's tail
    assert "".join(services.chunk_text("短文本。", 100, 30)) == "短文本。"
    assert services.chunk_text("x" * 250, size=100, overlap=20)  # an over-long sentence is cut, not lost


def test_import_markdown_with_sections(db):
    md = (
        "# 安装指南\n\n## 准备材料\n身份证、行驶证、物业同意书。\n\n"
        "## 施工\n工程师上门施工，约半天完成。\n\n# 售后\n质保三年。\n"
    )
    document, count = services.import_document("install.md", md.encode(), version="v2")
    assert count == 3 and document.kind == "md"
    sections = list(document.entries.order_by("id").values_list("question", "section"))
    assert sections == [("准备材料", "安装指南 > 准备材料"), ("施工", "安装指南 > 施工"), ("售后", "售后")]
    hit = services.search("需要准备什么材料", k=1, hybrid=False).best
    assert hit.citation["document"] == "install" and hit.citation["version"] == "v2"
    assert hit.citation["section"] == "安装指南 > 准备材料"


def test_import_csv_and_txt_and_reimport_replaces(db):
    csv_text = "问题,答案,分类,标签\n充电桩能定时吗,可以在App里预约,使用,App;预约\n,空问题被跳过,,\n"
    document, count = services.import_document("faq.csv", csv_text.encode("gb18030"), title="补充问答")
    assert count == 1
    entry = document.entries.get()
    assert (entry.section, entry.tags) == ("使用", ["App", "预约"])

    txt = "第一段讲安装。\n\n第二段讲质保，整桩三年。"
    doc2, count = services.import_document("notes.txt", txt)
    assert count == 2 and list(doc2.entries.values_list("section", flat=True)) == ["第1段", "第2段"]
    _, count = services.import_document("notes.txt", "只剩一段。", document=doc2)
    assert count == 1 and doc2.entries.count() == 1

    with pytest.raises(ValueError):
        services.import_document("x.csv", "a,b\n1,2\n")
    with pytest.raises(ValueError):
        services.import_document("x.pdf", b"%PDF")


@pytest.fixture
def admin_client_logged_in(client, db):
    user = get_user_model().objects.create_superuser("boss", password="pw-123456")
    client.force_login(user)
    return client


def test_admin_try_page_shows_hits_scores_and_path(admin_client_logged_in, faq_kb):
    url = reverse("admin:knowledge_entry_try")
    page = admin_client_logged_in.get(url, {"query": "E01是什么意思", "k": 3, "mode": "hybrid"})
    html = page.content.decode()
    assert page.status_code == 200
    assert "报警码 E01 是什么意思" in html and 'class="hit"' in html
    assert "检索路径：<strong>关键词</strong>" in html and "no embeddings in the index" in html
    empty = admin_client_logged_in.get(url, {"query": "今天天气", "k": 3, "mode": "keyword"}).content.decode()
    assert 'id="no-hits"' in empty or 'class="hit"' in empty
    assert admin_client_logged_in.get(reverse("admin:knowledge_entry_changelist")).status_code == 200


def test_admin_document_upload_imports_chunks(admin_client_logged_in):
    upload = SimpleUploadedFile("guide.md", "# 移机\n搬家后可以移机，按次收费。\n".encode())
    response = admin_client_logged_in.post(
        reverse("admin:knowledge_document_add"),
        {"title": "移机指南", "version": "1", "chunk_size": 400, "chunk_overlap": 80, "upload": upload},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    document = Document.objects.get(title="移机指南")
    assert document.entries.count() == 1 and document.kind == "md"


def test_admin_approves_candidates(admin_client_logged_in):
    candidate = services.propose_candidate("充电桩能接太阳能吗", "可以，需要加装储能逆变器。", "r-1")
    response = admin_client_logged_in.post(
        reverse("admin:knowledge_candidate_changelist"),
        {"action": "approve", "_selected_action": [candidate.pk]},
    )
    assert response.status_code == 302
    candidate.refresh_from_db()
    assert candidate.status == "approved"
    assert Entry.objects.filter(question="充电桩能接太阳能吗").exists()


def test_embedding_task_is_quiet_without_an_embedding_model_and_retries_when_one_fails(db, monkeypatch):
    from celery.exceptions import Retry

    from apps.knowledge.tasks import embed_entries_task
    from apps.llm_gateway.types import EmbeddingUnavailable, NoEmbeddingModel

    Entry.objects.create(question="7kW 交流桩用多粗的线？", answer="6 平方铜线。")

    def no_model(*args, **kwargs):
        raise NoEmbeddingModel("no embedding model configured for route 'embedding'")

    monkeypatch.setattr(services, "embed_entries", no_model)
    assert embed_entries_task.apply().get() == 0  # embedded default: nothing to retry

    def provider_down(*args, **kwargs):
        raise EmbeddingUnavailable("no embedding model answered: qwen/text-embedding-v3 error")

    monkeypatch.setattr(services, "embed_entries", provider_down)
    with pytest.raises(Retry):
        embed_entries_task.apply(throw=True).get()
