"""Reading documents into knowledge entries: txt (paragraphs), Markdown (heading sections) and CSV
(question / answer columns, English or Chinese headers), cut into chunks of about `size` characters on
sentence boundaries with `overlap` characters carried over. Plain Python: no database."""

import csv
import io
import re

_SENTENCE_END = re.compile(r"(?<=[。！？!?；;\n])")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if s.strip()]


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """Chunks of about `size` characters on sentence boundaries; each starts with up to `overlap`
    characters of the previous chunk's last sentences. A sentence longer than `size` is cut."""
    sentences: list[str] = []
    for sentence in split_sentences(text):
        while len(sentence) > size:
            sentences.append(sentence[:size])
            sentence = sentence[max(1, size - overlap) :]
        sentences.append(sentence)
    chunks: list[str] = []
    current: list[str] = []
    length = 0
    for sentence in sentences:
        if current and length + len(sentence) > size:
            chunks.append("".join(current).strip())
            carry: list[str] = []
            carried = 0
            for previous in reversed(current):
                if carried + len(previous) > overlap:
                    break
                carry.insert(0, previous)
                carried += len(previous)
            current, length = carry, carried
        current.append(sentence)
        length += len(sentence)
    if current and "".join(current).strip():
        chunks.append("".join(current).strip())
    return chunks


def _title_of(chunk: str, limit: int = 60) -> str:
    first = split_sentences(chunk)[0].strip() if chunk.strip() else ""
    return first[:limit]


def _markdown_sections(text: str) -> list[tuple[str, str]]:
    """[(heading path, body)] in order; text before the first heading has an empty path."""
    sections: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []

    def flush():
        content = "\n".join(body).strip()
        if content:
            sections.append((" > ".join(h for _, h in path), content))
        body.clear()

    for line in text.splitlines():
        match = _HEADING.match(line)
        if match:
            flush()
            level = len(match.group(1))
            path = [(lvl, h) for lvl, h in path if lvl < level] + [(level, match.group(2))]
        else:
            body.append(line)
    flush()
    return sections


_CSV_FIELDS = {
    "question": ("question", "title", "问题", "标题"),
    "answer": ("answer", "content", "答案", "内容", "回答"),
    "section": ("section", "category", "章节", "分类"),
    "tags": ("tags", "标签"),
}


def _csv_rows(text: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text))
    columns = {}
    for field, names in _CSV_FIELDS.items():
        for name in reader.fieldnames or []:
            if name and name.strip().lower() in names:
                columns[field] = name
                break
    if "question" not in columns or "answer" not in columns:
        raise ValueError("CSV 需要 question/answer（或 问题/答案）两列")
    rows = []
    for row in reader:
        question = (row.get(columns["question"]) or "").strip()
        answer = (row.get(columns["answer"]) or "").strip()
        if not question or not answer:
            continue
        tags = [t for t in re.split(r"[,，;；\s]+", row.get(columns.get("tags", ""), "") or "") if t]
        rows.append(
            {
                "question": question,
                "answer": answer,
                "section": (row.get(columns.get("section", ""), "") or "").strip(),
                "tags": tags,
            }
        )
    return rows


def decode(content: bytes | str) -> str:
    if isinstance(content, str):
        return content
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return content.decode(encoding)
        except UnicodeDecodeError:
            continue
    return content.decode("utf-8", errors="replace")


def parse_document(filename: str, content: bytes | str, size: int, overlap: int) -> tuple[str, list[dict]]:
    """(kind, rows) for a txt / md / csv file: rows are dicts of Entry fields."""
    text = decode(content).replace("\r\n", "\n")
    kind = filename.rsplit(".", 1)[-1].lower() if "." in filename else "txt"
    if kind == "csv":
        return kind, _csv_rows(text)
    if kind in ("md", "markdown"):
        rows = []
        for heading, body in _markdown_sections(text):
            for n, chunk in enumerate(chunk_text(body, size, overlap), 1):
                title = heading.rsplit(" > ", 1)[-1] if heading else _title_of(chunk)
                rows.append({"question": title if n == 1 else f"{title}（{n}）", "answer": chunk, "section": heading})
        return "md", rows
    if kind != "txt":
        raise ValueError(f"不支持的文件类型：.{kind}（支持 txt、md、csv）")
    rows = []
    for paragraph_no, paragraph in enumerate(re.split(r"\n\s*\n", text), 1):
        for chunk in chunk_text(paragraph.strip(), size, overlap):
            rows.append({"question": _title_of(chunk), "answer": chunk, "section": f"第{paragraph_no}段"})
    return "txt", rows
