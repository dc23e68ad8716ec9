"""Importing txt / md / csv documents: chunking, sections, re-import, bad files refused whole."""

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from apps.knowledge import documents, services
from apps.knowledge.models import Document, Entry

from .conftest import search

pytestmark = pytest.mark.django_db(transaction=True)


def test_chunking_respects_size_and_overlap():
    text = "".join(f"第{i}句话讲的是充电桩的第{i}个知识点。" for i in range(40))
    chunks = documents.chunk_text(text, size=100, overlap=30)
    assert len(chunks) > 5
    assert all(len(c) <= 100 for c in chunks)
    for previous, current in zip(chunks, chunks[1:], strict=False):
        last_sentence = documents.split_sentences(previous)[-1]
        assert current.startswith(last_sentence)  # the overlap carries the previous chunk's tail
    assert "".join(documents.chunk_text("短文本。", 100, 30)) == "短文本。"
    assert documents.chunk_text("x" * 250, size=100, overlap=20)  # an over-long sentence is cut, not lost


def test_import_markdown_with_sections(enqueued):
    md = (
        "# 安装指南\n\n## 准备材料\n身份证、行驶证、物业同意书。\n\n"
        "## 施工\n工程师上门施工，约半天完成。\n\n# 售后\n质保三年。\n"
    )
    document, count = services.import_document("install.md", md.encode(), version="v2")
    assert count == 3 and document.kind == "md"
    sections = list(document.entries.order_by("id").values_list("question", "section"))
    assert sections == [("准备材料", "安装指南 > 准备材料"), ("施工", "安装指南 > 施工"), ("售后", "售后")]
    hit = search("需要准备什么材料", k=1, hybrid=False).best
    assert hit.citation["document"] == "install" and hit.citation["version"] == "v2"
    assert hit.citation["section"] == "安装指南 > 准备材料"
    ids = sorted(document.entries.values_list("id", flat=True))
    assert [(name, sorted(args[0])) for name, args in enqueued] == [("knowledge.embed_entries", ids)]


def test_import_csv_and_txt_and_reimport_replaces():
    csv_text = "问题,答案,分类,标签\n充电桩能定时吗,可以在App里预约,使用,App;预约\n,空问题被跳过,,\n"
    document, count = services.import_document("faq.csv", csv_text.encode("gb18030"), title="补充问答")
    assert count == 1 and document.title == "补充问答"
    entry = document.entries.get()
    assert (entry.section, entry.tags) == ("使用", ["App", "预约"])
    assert search("能定时吗", k=1, hybrid=False).best.entry_id == entry.id

    txt = "第一段讲安装。\n\n第二段讲质保，整桩三年。"
    doc2, count = services.import_document("notes.txt", txt)
    assert count == 2 and list(doc2.entries.values_list("section", flat=True)) == ["第1段", "第2段"]
    _, count = services.import_document("notes.txt", "只剩一段。", document=doc2)
    assert count == 1 and doc2.entries.count() == 1
    assert search("整桩三年", k=1, hybrid=False).best is None  # the replaced version is not served


@pytest.mark.parametrize(
    "filename, content, message",
    [("x.csv", "a,b\n1,2\n", "question/answer"), ("x.pdf", b"%PDF", "不支持的文件类型")],
)
def test_a_file_that_cannot_be_read_changes_nothing(filename, content, message):
    document, _ = services.import_document("notes.txt", "第一段讲安装。")
    with pytest.raises(ValueError, match=message):
        services.import_document(filename, content, document=document)
    document.refresh_from_db()
    assert document.source_name == "notes.txt" and document.entries.count() == 1
    assert Document.objects.count() == 1


@pytest.fixture
def staff(client):
    client.force_login(get_user_model().objects.create_superuser("boss", password="pw-123456"))
    return client


def test_admin_document_upload_imports_chunks(staff):
    upload = SimpleUploadedFile("guide.md", "# 移机\n搬家后可以移机，按次收费。\n".encode())
    response = staff.post(
        reverse("admin:knowledge_document_add"),
        {"title": "移机指南", "version": "1", "chunk_size": 400, "chunk_overlap": 80, "upload": upload},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    document = Document.objects.get(title="移机指南")
    assert document.entries.count() == 1 and document.kind == "md"
    assert search("搬家移机", k=1, hybrid=False).best.citation["document"] == "移机指南"

    change = reverse("admin:knowledge_document_change", args=[document.pk])
    data = {"title": "移机与拆机指南", "version": "2", "chunk_size": 400, "chunk_overlap": 80}
    assert staff.post(change, data).status_code == 302
    assert search("搬家移机", k=1, hybrid=False).best.citation == {
        "entry_id": document.entries.get().pk,
        "document": "移机与拆机指南",
        "version": "2",
        "section": "移机",
    }


def test_admin_refuses_a_bad_upload_and_keeps_the_document(staff):
    document, _ = services.import_document("notes.txt", "第一段讲安装。", title="笔记")
    upload = SimpleUploadedFile("bad.csv", b"a,b\n1,2\n")
    change = reverse("admin:knowledge_document_change", args=[document.pk])
    data = {"title": "笔记", "version": "", "chunk_size": 400, "chunk_overlap": 80, "upload": upload}
    page = staff.post(change, data)
    assert page.status_code == 200 and "CSV 需要 question/answer" in page.content.decode()
    assert document.entries.count() == 1 and Entry.objects.count() == 1
    add = staff.post(reverse("admin:knowledge_document_add"), {"title": "空", "chunk_size": 400, "chunk_overlap": 80})
    assert "请上传文件" in add.content.decode()


def test_deleting_a_document_removes_its_entries_from_search(staff):
    document, _ = services.import_document("notes.txt", "第二段讲质保，整桩三年。")
    assert search("整桩三年", k=1, hybrid=False).best is not None
    delete = reverse("admin:knowledge_document_delete", args=[document.pk])
    assert staff.post(delete, {"post": "yes"}).status_code == 302
    assert search("整桩三年", k=1, hybrid=False).best is None and not Entry.objects.exists()
