"""Knowledge base logic: the per-process index, hybrid search with keyword fallback, the offline
answer, embeddings, document import and the learning loop (candidates, gaps).

Public API (used by engines, the pipeline, the gateway's offline provider, admin, tasks):
- `search(query, k=5, *, hybrid=True) -> SearchResult` (sync) and `asearch(...)` (async);
- `offline_answer(messages) -> str | None` / `aoffline_answer(messages)`;
- `propose_candidate(question, answer, source_reply_id)`, `record_gap(question, reason)`,
  `approve_candidate(candidate, reviewer)`;
- `import_document(...)`, `embed_entries(ids=None)`, `bump_version()`.

The index lives in this process (`index.RetrievalIndex`). Any change to entries, synonyms or custom
words calls `bump_version()`: this process rebuilds on its next query, and after the transaction
commits a new token goes to the Redis key `knowledge:index:version`, which every other process
compares with its own at most once per `KNOWLEDGE_VERSION_CHECK_MS`.
"""

from __future__ import annotations

import asyncio
import contextvars
import csv
import hashlib
import io
import logging
import re
import threading
import time
import uuid
from collections import Counter, OrderedDict
from contextlib import contextmanager

import numpy as np
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.llm_gateway import services as gateway

from .index import IndexEntry, RetrievalIndex
from .text import Analyzer, normalize
from .types import Hit, SearchResult

logger = logging.getLogger(__name__)

VERSION_KEY = "knowledge:index:version"


# --- the per-process index ---------------------------------------------------------------------
class _State:
    index: RetrievalIndex | None = None
    checked_at: float = 0.0
    dirty: bool = True
    analyzer: Analyzer | None = None
    analyzer_key: str = ""
    embed_down_until: float = 0.0


_state = _State()
_lock = threading.Lock()
_suppress = contextvars.ContextVar("knowledge_suppress_signals", default=False)


def bump_version() -> None:
    """Entries, synonyms or custom words changed: rebuild here now, everywhere after commit."""
    _state.dirty = True
    transaction.on_commit(_publish_version)


def _publish_version() -> None:
    _state.dirty = True
    try:
        cache.set(VERSION_KEY, uuid.uuid4().hex, timeout=None)
    except Exception:
        logger.warning("could not publish the knowledge index version", exc_info=True)


def _remote_version() -> str:
    version = cache.get(VERSION_KEY)
    if version is None:
        cache.add(VERSION_KEY, uuid.uuid4().hex, timeout=None)
        version = cache.get(VERSION_KEY)
    return version


@contextmanager
def bulk_changes():
    """Suppress per-row index bumps and embedding tasks (imports); bump once at the end."""
    token = _suppress.set(True)
    try:
        yield
    finally:
        _suppress.reset(token)
    bump_version()


def signals_suppressed() -> bool:
    return _suppress.get()


def _analyzer() -> Analyzer:
    from .models import CustomWord, Synonym

    words = sorted(CustomWord.objects.filter(enabled=True).values_list("word", flat=True))
    groups = [s.group() for s in Synonym.objects.filter(enabled=True).order_by("id")]
    key = hashlib.sha256(repr((words, groups)).encode()).hexdigest()
    if _state.analyzer is None or _state.analyzer_key != key:
        _state.analyzer = Analyzer(words, groups)
        _state.analyzer_key = key
    return _state.analyzer


def build_index(version: str = "") -> RetrievalIndex:
    from .models import Entry

    analyzer = _analyzer()
    rows = list(
        Entry.objects.filter(enabled=True)
        .select_related("document")
        .order_by("id")
        .only(
            "id",
            "question",
            "answer",
            "version",
            "section",
            "tags",
            "embedding",
            "embedding_model",
            "document__title",
            "document__version",
        )
    )
    models = Counter(r.embedding_model for r in rows if r.embedding and r.embedding_model)
    model = models.most_common(1)[0][0] if models else ""
    entries = [
        IndexEntry(
            id=r.id,
            question=r.question,
            answer=r.answer,
            document=r.document.title if r.document_id else "",
            version=r.version or (r.document.version if r.document_id else ""),
            section=r.section,
            tags=list(r.tags or []),
            embedding=r.vector() if model and r.embedding_model == model else None,
        )
        for r in rows
    ]
    started = time.perf_counter()
    index = RetrievalIndex(entries, analyzer, embedding_model=model, version=version)
    logger.info(
        "knowledge index built: %d entries, %d with vectors (%s) in %.0f ms",
        index.size,
        index.vector_count,
        model or "-",
        (time.perf_counter() - started) * 1000,
    )
    return index


def _fresh_index() -> RetrievalIndex | None:
    """The current index when no check is due (no I/O), else None."""
    index = _state.index
    due = (time.monotonic() - _state.checked_at) * 1000 >= settings.KNOWLEDGE_VERSION_CHECK_MS
    return None if index is None or _state.dirty or due else index


# Up to this many entries a stale index is rebuilt in the query that notices it (well under a second);
# above, the query is answered from the previous index while a thread rebuilds (seconds at 10,000).
SYNC_REBUILD_MAX_ENTRIES = 3000
_rebuilding = threading.Event()


def get_index(force: bool = False) -> RetrievalIndex:
    index = None if force else _fresh_index()
    if index is not None:
        return index
    with _lock:
        current = _state.index
        try:
            version = _remote_version()
        except Exception:  # Redis down: keep serving what we have
            logger.warning("knowledge version check failed", exc_info=True)
            version = current.version if current is not None else "unknown"
        _state.checked_at = time.monotonic()
        if not (force or current is None or _state.dirty or version != current.version):
            return current
        if force or current is None or current.size <= SYNC_REBUILD_MAX_ENTRIES:
            _state.dirty = False
            _state.index = build_index(version)
            return _state.index
        if not _rebuilding.is_set():
            _rebuilding.set()
            _state.dirty = False
            threading.Thread(
                target=_rebuild_in_background, args=(version,), name="knowledge-index", daemon=True
            ).start()
        return current


def warm_up() -> bool:
    """Build the index and load jieba's dictionary now (1–3 s), so a process's first customer question
    does not wait for them. True when warmed; a failure is logged and the first query does the work."""
    started = time.perf_counter()
    try:
        get_index().analyzer.words("充电桩")
    except Exception:
        logger.warning("knowledge warm-up failed; the first query builds the index", exc_info=True)
        return False
    logger.info("knowledge index warmed in %.0f ms", (time.perf_counter() - started) * 1000)
    return True


def warm_up_in_background() -> threading.Thread | None:
    """`warm_up` on a daemon thread (process start must not wait); None when KNOWLEDGE_WARM_ON_START is off."""
    if not settings.KNOWLEDGE_WARM_ON_START:
        return None

    def run():
        try:
            warm_up()
        finally:
            connection.close()  # the thread's own connection

    thread = threading.Thread(target=run, name="knowledge-warm-up", daemon=True)
    thread.start()
    return thread


def _rebuild_in_background(version: str) -> None:
    try:
        index = build_index(version)
        with _lock:
            _state.index = index
    except Exception:
        _state.dirty = True  # try again on a later query
        logger.exception("knowledge index rebuild failed; still serving the previous index")
    finally:
        _rebuilding.clear()
        connection.close()


def reset_index() -> None:
    """Forget this process's index (tests)."""
    with _lock:
        _state.index = None
        _state.dirty = True
        _state.embed_down_until = 0.0
        _query_vectors.clear()


# --- embeddings ----------------------------------------------------------------------------------
_query_vectors: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()
_QUERY_CACHE_SIZE = 1024


async def _embed(texts: list[str]):
    return await gateway.embed(texts, route=settings.KNOWLEDGE_EMBEDDING_ROUTE)


def _cached_query_vector(query: str) -> tuple[str, np.ndarray] | None:
    cached = _query_vectors.get(query)
    if cached is not None:
        try:
            _query_vectors.move_to_end(query)
        except KeyError:  # evicted by another thread meanwhile
            pass
    return cached


async def _embed_query(query: str) -> tuple[str, np.ndarray]:
    cached = _cached_query_vector(query)
    if cached is not None:
        return cached
    result = await asyncio.wait_for(_embed([query]), timeout=settings.KNOWLEDGE_EMBED_TIMEOUT)
    value = (result.model, np.asarray(result.vectors[0], dtype=np.float32))
    _query_vectors[query] = value
    if len(_query_vectors) > _QUERY_CACHE_SIZE:
        _query_vectors.popitem(last=False)
    return value


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "embedding timed out"
    return f"embedding unavailable: {type(exc).__name__}: {exc}"[:300]


def embed_entries(ids: list[int] | None = None, *, all_entries: bool = False) -> int:
    """Embed entries without a vector (or `all_entries`: re-embed everything). Returns the count."""
    from apps.core import aio

    from .models import Entry

    qs = Entry.objects.all() if all_entries else Entry.objects.filter(embedding__isnull=True)
    if ids is not None:
        qs = qs.filter(id__in=ids)
    pending = list(qs.order_by("id").values_list("id", "question", "answer", "content_hash"))
    batch = settings.KNOWLEDGE_EMBED_BATCH
    done = 0
    for start in range(0, len(pending), batch):
        chunk = pending[start : start + batch]
        result = aio.run(_embed([f"{q}\n{a}" for _, q, a, _ in chunk]))
        for (entry_id, _, _, digest), vector in zip(chunk, result.vectors, strict=True):
            # Only if the text is still the one we embedded (an edit meanwhile clears and re-queues).
            done += Entry.objects.filter(id=entry_id, content_hash=digest).update(
                embedding=np.asarray(vector, dtype=np.float32).tobytes(), embedding_model=result.model
            )
    if done:
        bump_version()
    return done


def enqueue_embedding(ids: list[int] | None) -> None:
    """After commit, ask a worker to embed these entries (all pending ones when None)."""

    def send():
        try:
            from .tasks import embed_entries_task

            embed_entries_task.delay(ids)
        except Exception:
            logger.warning("could not enqueue knowledge embedding", exc_info=True)

    transaction.on_commit(send)


# --- search --------------------------------------------------------------------------------------
def _rank(index: RetrievalIndex, query: str, k: int, qvec: np.ndarray | None) -> tuple[list[Hit], list[str]]:
    keyword, terms = index.keyword_scores(query)
    vector = None
    fused = keyword
    if qvec is not None:
        alpha = settings.KNOWLEDGE_HYBRID_ALPHA
        vector = index.vector_scores(qvec)
        fused = alpha * vector + (1 - alpha) * keyword
    hits = []
    for i in index.top(fused, k, settings.KNOWLEDGE_MIN_SCORE):
        e = index.entries[i]
        hits.append(
            Hit(
                entry_id=e.id,
                title=e.question,
                answer=e.answer,
                score=round(float(fused[i]), 4),
                keyword_score=round(float(keyword[i]), 4),
                vector_score=None if vector is None else round(float(vector[i]), 4),
                document=e.document,
                version=e.version,
                section=e.section,
                tags=tuple(e.tags),
            )
        )
    return hits, terms


def _vector_plan(index: RetrievalIndex, hybrid: bool) -> str:
    """'' when the vector path should run, else why not."""
    if not hybrid:
        return "keyword only requested"
    if not index.size:
        return "empty knowledge base"
    if not index.has_vectors:
        return "no embeddings in the index"
    if time.monotonic() < _state.embed_down_until:
        return "embedding unavailable (recent failure, retrying shortly)"
    return ""


def _finish(index, query, k, started, qvec, reason, embed_ms, model=None) -> SearchResult:
    if qvec is not None and model != index.embedding_model:
        qvec, reason = None, f"query embedded by {model}, index by {index.embedding_model}"
    hits, terms = _rank(index, query, k, qvec)
    # A fallback is when the hybrid path was wanted but could not run (no provider, provider down,
    # circuit open, timeout, no vectors yet); asking for keyword only or an empty base is not one.
    requested = bool(query.strip()) and reason not in ("keyword only requested", "empty knowledge base")
    return SearchResult(
        query=query,
        hits=hits,
        path="hybrid" if qvec is not None else "keyword",
        fallback=qvec is None and requested,
        fallback_reason="" if qvec is not None else reason,
        terms=terms,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        embed_ms=round(embed_ms, 3),
    )


def _embedding_failed(exc: BaseException) -> str:
    _state.embed_down_until = time.monotonic() + settings.KNOWLEDGE_EMBED_BACKOFF
    logger.info("knowledge search falls back to keyword: %s", _describe(exc))
    return _describe(exc)


def search(query: str, k: int = 5, *, hybrid: bool = True) -> SearchResult:
    """Hybrid search (keyword-only fallback when embeddings are unavailable). Sync callers only."""
    from apps.core import aio

    started = time.perf_counter()
    index = get_index()
    reason = _vector_plan(index, hybrid)
    qvec = model = None
    embed_ms = 0.0
    if not reason and query.strip():
        t = time.perf_counter()
        try:
            # A repeated question needs no hop to the event loop thread.
            model, qvec = _cached_query_vector(query) or aio.run(_embed_query(query))
        except Exception as exc:
            reason = _embedding_failed(exc)
        embed_ms = (time.perf_counter() - t) * 1000
    result = _finish(index, query, k, started, qvec, reason, embed_ms, model)
    if _is_gap(result):
        _record_fallback_gap(result)
    return result


def _get_index_in_thread() -> RetrievalIndex:
    try:
        return get_index()
    finally:
        connection.close()  # a worker thread of asgiref's pool: do not keep a connection per thread


async def asearch(query: str, k: int = 5, *, hybrid: bool = True) -> SearchResult:
    """`search` for async callers (engines): index checks/rebuilds go to a thread."""
    started = time.perf_counter()
    index = _fresh_index() or await sync_to_async(_get_index_in_thread, thread_sensitive=False)()
    reason = _vector_plan(index, hybrid)
    qvec = model = None
    embed_ms = 0.0
    if not reason and query.strip():
        t = time.perf_counter()
        try:
            model, qvec = await _embed_query(query)
        except Exception as exc:
            reason = _embedding_failed(exc)
        embed_ms = (time.perf_counter() - t) * 1000
    result = _finish(index, query, k, started, qvec, reason, embed_ms, model)
    if _is_gap(result):
        # Off the request path: a thread writes the gap while the answer goes on.
        asyncio.get_running_loop().run_in_executor(None, _record_fallback_gap, result, True)
    return result


def _is_gap(result: SearchResult) -> bool:
    """A question the vector path should have answered but the provider could not (outage, timeout):
    listed as a gap so a supervisor can check the keyword answer. A base without vectors at all (no
    embedding provider configured) is the normal keyword mode, not a gap."""
    return (
        result.fallback
        and result.fallback_reason != "no embeddings in the index"
        and settings.KNOWLEDGE_RECORD_FALLBACK_GAPS
    )


def _record_fallback_gap(result: SearchResult, own_thread: bool = False) -> None:
    try:
        record_gap(result.query, "keyword_fallback")
    except Exception:
        logger.warning("could not record a knowledge gap", exc_info=True)
    finally:
        if own_thread:  # an executor thread: do not keep a connection per thread
            connection.close()


# --- the offline answer ----------------------------------------------------------------------------
def _last_user_text(messages) -> str:
    for message in reversed(list(messages or [])):
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", "")
        content = message.get("content") if isinstance(message, dict) else getattr(message, "content", "")
        if role == "user":
            if isinstance(content, list):  # OpenAI content parts
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _offline_pick(result: SearchResult) -> str | None:
    best = result.best
    if best is not None and best.keyword_score >= settings.KNOWLEDGE_OFFLINE_MIN_SCORE:
        return best.answer
    return None


def offline_answer(messages) -> str | None:
    """The best hit's answer for the last user message when its score clears the threshold, else None.

    Keyword path only: no LLM and no embedding call (the offline provider runs when those are down).
    """
    question = _last_user_text(messages)
    if not question.strip():
        return None
    return _offline_pick(search(question, k=1, hybrid=False))


async def aoffline_answer(messages) -> str | None:
    question = _last_user_text(messages)
    if not question.strip():
        return None
    return _offline_pick(await asearch(question, k=1, hybrid=False))


# --- learning loop -----------------------------------------------------------------------------------
_ID_CARD = re.compile(
    r"(?<![0-9])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx](?![0-9Xx])"
)
_BANK_CARD = re.compile(r"(?<![0-9])(?:\d[ -]?){15,18}\d(?![0-9])")
_PHONE = re.compile(r"(?<![0-9])(?:\+?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?![0-9])")


def redact(text: str) -> str:
    """Mask ID-card, bank-card and mobile numbers (in that order: an ID number is 18 digits too)."""
    text = _ID_CARD.sub("[身份证号]", text or "")
    text = _BANK_CARD.sub("[银行卡号]", text)
    return _PHONE.sub("[手机号]", text)


def propose_candidate(question: str, answer: str, source_reply_id=None):
    """Queue a reply for review as a knowledge entry (redacted). Idempotent per source reply."""
    from .models import Candidate

    question, answer = redact(question).strip(), redact(answer).strip()
    if not question or not answer:
        return None
    source = "" if source_reply_id is None else str(source_reply_id)
    if source:
        candidate, _ = Candidate.objects.get_or_create(
            source_reply_id=source, defaults={"question": question, "answer": answer}
        )
        return candidate
    return Candidate.objects.create(question=question, answer=answer)


def approve_candidate(candidate, reviewer: str = "", question: str | None = None, answer: str | None = None):
    """Turn a candidate into an entry of the "learned" document."""
    from .models import Document, Entry

    with transaction.atomic():
        document, _ = Document.objects.get_or_create(
            kind="learned", defaults={"title": "客服回复学习", "version": "auto"}
        )
        entry = Entry.objects.create(
            question=question or candidate.question,
            answer=answer or candidate.answer,
            document=document,
            section="learned",
            tags=["learned"],
        )
        candidate.status = "approved"
        candidate.entry = entry
        candidate.reviewed_at = timezone.now()
        candidate.reviewed_by = reviewer
        candidate.save(update_fields=["status", "entry", "reviewed_at", "reviewed_by"])
    return entry


def reject_candidate(candidate, reviewer: str = "") -> None:
    candidate.status = "rejected"
    candidate.reviewed_at = timezone.now()
    candidate.reviewed_by = reviewer
    candidate.save(update_fields=["status", "reviewed_at", "reviewed_by"])


def record_gap(question: str, reason: str):
    """Count a question the knowledge base did not answer well (keyword fallback, human handoff)."""
    from .models import Gap

    question = redact(question).strip()
    if not question:
        return None
    digest = hashlib.sha256(normalize(question).strip().encode()).hexdigest()
    now = timezone.now()
    if Gap.objects.filter(question_hash=digest).update(
        count=F("count") + 1, reason=reason[:200], last_seen=now, resolved=False
    ):
        return Gap.objects.get(question_hash=digest)
    try:
        with transaction.atomic():
            return Gap.objects.create(question=question, question_hash=digest, reason=reason[:200])
    except IntegrityError:  # created concurrently
        Gap.objects.filter(question_hash=digest).update(count=F("count") + 1, last_seen=now)
        return Gap.objects.get(question_hash=digest)


# --- document import -----------------------------------------------------------------------------------
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


def import_document(
    filename: str,
    content: bytes | str,
    *,
    title: str = "",
    version: str = "",
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    document=None,
):
    """Create (or refill) a Document from a txt / md / csv file; returns (document, entry count).

    Re-importing into an existing document replaces its entries (a new version of the file)."""
    from .models import Document, Entry

    size = chunk_size or settings.KNOWLEDGE_CHUNK_SIZE
    overlap = min(chunk_overlap if chunk_overlap is not None else settings.KNOWLEDGE_CHUNK_OVERLAP, size // 2)
    kind, rows = parse_document(filename, content, size, overlap)
    with transaction.atomic(), bulk_changes():
        if document is None:
            document = Document.objects.create(
                title=title or filename.rsplit(".", 1)[0],
                version=version,
                kind=kind,
                source_name=filename,
                chunk_size=size,
                chunk_overlap=overlap,
            )
        else:
            document.entries.all().delete()
            document.kind, document.source_name = kind, filename
            document.version = version or document.version
            document.chunk_size, document.chunk_overlap = size, overlap
            document.save()
        entries = [
            Entry(
                document=document,
                question=row["question"][:500],
                answer=row["answer"],
                section=row.get("section", "")[:200],
                tags=row.get("tags", []),
            )
            for row in rows
        ]
        for entry in entries:
            entry.content_hash = entry.compute_hash()
        Entry.objects.bulk_create(entries, batch_size=500)
        enqueue_embedding([e.id for e in entries] if all(e.id for e in entries) else None)
    return document, len(entries)
