"""Knowledge base logic: the per-process index, hybrid search with keyword fallback, the offline
answer, embeddings, document import and the learning loop (candidates, gaps).

Public API (engines, the pipeline, the gateway's offline provider, admin, tasks):
- `await search(query, k=5, *, hybrid=True) -> SearchResult`, `await offline_answer(messages) -> str | None`
  (sync callers bridge with `apps.core.aio.run`);
- writes, each of which bumps the index: `save_entry`, `delete_entries`, `set_entries_enabled`,
  `reembed_entries`, `save_document`, `delete_documents`, `save_dictionary_item`,
  `delete_dictionary_items`, `import_document`, `approve_candidate`;
- `propose_candidate`, `reject_candidate`, `record_gap` (sync ORM); `await embed_entries(ids)`.

The index lives in this process: `INDEX`, a versioned cache (apps.core.cache). A write bumps it: this
process rebuilds on its next query, the others once they see the new Redis version (checked at most
every KNOWLEDGE_VERSION_CHECK_MS). Above SYNC_REBUILD_MAX_ENTRIES the previous index keeps answering
while the new one is built. Entries whose text changed lose their vector and are re-embedded by the
task `knowledge.embed_entries`, enqueued by the write.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
import time
from collections import Counter, OrderedDict

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from apps.core import aio, jobs
from apps.core.cache import VersionedCache
from apps.core.db import run_db
from apps.llm_gateway import services as gateway

from .documents import parse_document
from .index import IndexEntry, RetrievalIndex
from .models import Candidate, CustomWord, Document, Entry, Gap, Synonym
from .text import Analyzer, normalize
from .types import Hit, SearchResult

logger = logging.getLogger(__name__)

EMBED_TASK = "knowledge.embed_entries"
# Up to this many entries a stale index is rebuilt by the query that notices it (well under a second);
# above, queries are answered from the previous index while the new one is built (seconds at 10,000).
SYNC_REBUILD_MAX_ENTRIES = 3000


# --- the per-process index ---------------------------------------------------------------------
class _State:
    analyzer: Analyzer | None = None
    analyzer_key: str = ""
    embed_down_until: float = 0.0


_state = _State()


def _analyzer() -> Analyzer:
    """The analyser of the current dictionary; kept while the dictionary is unchanged, so a rebuild
    after an entry edit re-tokenises only the entries whose text changed."""
    words = sorted(CustomWord.objects.filter(enabled=True).values_list("word", flat=True))
    groups = [s.group() for s in Synonym.objects.filter(enabled=True).order_by("id")]
    key = hashlib.sha256(repr((words, groups)).encode()).hexdigest()
    if _state.analyzer is None or _state.analyzer_key != key:
        _state.analyzer = Analyzer(words, groups)
        _state.analyzer_key = key
    return _state.analyzer


def _index_rows() -> list[Entry]:
    fields = ("id", "question", "answer", "version", "section", "tags", "embedding", "embedding_model")
    return list(
        Entry.objects.filter(enabled=True)
        .select_related("document")
        .order_by("id")
        .only(*fields, "document__title", "document__version")
    )


def build_index(version: str = "") -> RetrievalIndex:
    """The index of the enabled entries (sync: reads the database)."""
    analyzer = _analyzer()
    rows = _index_rows()
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


INDEX: VersionedCache[RetrievalIndex] = VersionedCache(
    "knowledge",
    load=build_index,
    check_seconds=lambda: settings.KNOWLEDGE_VERSION_CHECK_MS / 1000,
    serve_stale=lambda index: index.size > SYNC_REBUILD_MAX_ENTRIES,
)


def warm_up() -> bool:
    """Build the index and load jieba's dictionary now (1–3 s), so a process's first customer question
    does not wait for them. True when warmed; a failure is logged and the first query does the work."""
    started = time.perf_counter()
    try:
        aio.run(INDEX.get()).analyzer.words("充电桩")
    except Exception:
        logger.warning("knowledge warm-up failed; the first query builds the index", exc_info=True)
        return False
    logger.info("knowledge index warmed in %.0f ms", (time.perf_counter() - started) * 1000)
    return True


def warm_up_in_background() -> threading.Thread | None:
    """`warm_up` on a daemon thread (process start must not wait); None when KNOWLEDGE_WARM_ON_START is off."""
    if not settings.KNOWLEDGE_WARM_ON_START:
        return None
    thread = threading.Thread(target=warm_up, name="knowledge-warm-up", daemon=True)
    thread.start()
    return thread


# --- writes: each one bumps the index ------------------------------------------------------------
def new_entry(document: Document | None, **fields) -> Entry:
    """An unsaved entry with its content hash (the hash of the text its vector describes)."""
    entry = Entry(document=document, **fields)
    entry.content_hash = entry.compute_hash()
    return entry


def enqueue_embedding(ids: list[int] | None) -> None:
    """After commit, a worker embeds these entries (every entry without a vector when None)."""
    jobs.enqueue(EMBED_TASK, ids)


def save_entry(entry: Entry) -> Entry:
    """Save an entry (admin). A changed text drops the old vector, which no longer describes it; an
    enabled entry without a vector is queued for embedding."""
    digest = entry.compute_hash()
    if digest != entry.content_hash:
        entry.content_hash, entry.embedding, entry.embedding_model = digest, None, ""
    with transaction.atomic():
        entry.save()
        INDEX.bump()
        if entry.embedding is None and entry.enabled:
            enqueue_embedding([entry.pk])
    return entry


def delete_entries(target) -> None:
    """Delete an entry or a queryset of entries."""
    with transaction.atomic():
        target.delete()
        INDEX.bump()


def set_entries_enabled(entries, enabled: bool) -> int:
    with transaction.atomic():
        count = entries.update(enabled=enabled)
        INDEX.bump()
    return count


def reembed_entries(entries) -> int:
    """Drop the vectors of these entries and queue them for embedding (e.g. after a model change)."""
    ids = list(entries.values_list("id", flat=True))
    with transaction.atomic():
        Entry.objects.filter(id__in=ids).update(embedding=None, embedding_model="")
        INDEX.bump()
        enqueue_embedding(ids)
    return len(ids)


def save_document(document: Document) -> Document:
    """Save a document's title / version (shown in every hit's citation)."""
    with transaction.atomic():
        document.save()
        INDEX.bump()
    return document


def delete_documents(target) -> None:
    """Delete a document or a queryset of documents, with their entries."""
    with transaction.atomic():
        target.delete()
        INDEX.bump()


def save_dictionary_item(item: Synonym | CustomWord) -> None:
    """Save a synonym group or a custom word: entries and questions are tokenised anew."""
    with transaction.atomic():
        item.save()
        INDEX.bump()


def delete_dictionary_items(target) -> None:
    with transaction.atomic():
        target.delete()
        INDEX.bump()


def import_document(
    filename: str,
    content: bytes | str,
    *,
    title: str = "",
    version: str = "",
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    document: Document | None = None,
) -> tuple[Document, int]:
    """Create (or refill) a Document from a txt / md / csv file; returns (document, entry count).

    Re-importing into an existing document replaces its entries (a new version of the file). A file
    that cannot be read raises ValueError (in Chinese) and changes nothing."""
    size = chunk_size or settings.KNOWLEDGE_CHUNK_SIZE
    overlap = min(chunk_overlap if chunk_overlap is not None else settings.KNOWLEDGE_CHUNK_OVERLAP, size // 2)
    kind, rows = parse_document(filename, content, size, overlap)
    document = document or Document(title=title or filename.rsplit(".", 1)[0])
    document.kind, document.source_name = kind, filename
    document.version = version or document.version
    document.chunk_size, document.chunk_overlap = size, overlap
    with transaction.atomic():
        if document.pk:
            document.entries.all().delete()
        document.save()
        entries = [
            new_entry(
                document,
                question=row["question"][:500],
                answer=row["answer"],
                section=row.get("section", "")[:200],
                tags=row.get("tags", []),
            )
            for row in rows
        ]
        Entry.objects.bulk_create(entries, batch_size=500)
        INDEX.bump()
        enqueue_embedding([e.id for e in entries] if all(e.id for e in entries) else None)
    return document, len(entries)


# --- embeddings ----------------------------------------------------------------------------------
_query_vectors: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()
_QUERY_CACHE_SIZE = 1024


async def _embed(texts: list[str]):
    return await gateway.embed(texts, route=settings.KNOWLEDGE_EMBEDDING_ROUTE)


async def _embed_query(query: str) -> tuple[str, np.ndarray]:
    cached = _query_vectors.get(query)
    if cached is not None:
        _query_vectors.move_to_end(query)
        return cached
    result = await asyncio.wait_for(_embed([query]), timeout=settings.KNOWLEDGE_EMBED_TIMEOUT)
    value = (result.model, np.asarray(result.vectors[0], dtype=np.float32))
    _query_vectors[query] = value
    if len(_query_vectors) > _QUERY_CACHE_SIZE:
        _query_vectors.popitem(last=False)
    return value


def _entries_to_embed(ids: list[int] | None, all_entries: bool) -> list[tuple]:
    qs = Entry.objects.all() if all_entries else Entry.objects.filter(embedding__isnull=True)
    if ids is not None:
        qs = qs.filter(id__in=ids)
    return list(qs.order_by("id").values_list("id", "question", "answer", "content_hash"))


def _store_vectors(chunk: list[tuple], model: str, vectors: list) -> int:
    stored = 0
    with transaction.atomic():
        for (entry_id, _, _, digest), vector in zip(chunk, vectors, strict=True):
            # Only if the text is still the one we embedded (an edit meanwhile clears and re-queues).
            stored += Entry.objects.filter(id=entry_id, content_hash=digest).update(
                embedding=np.asarray(vector, dtype=np.float32).tobytes(), embedding_model=model
            )
        if stored:
            INDEX.bump()
    return stored


async def embed_entries(ids: list[int] | None = None, *, all_entries: bool = False) -> int:
    """Embed entries without a vector (or `all_entries`: re-embed everything). Returns the count.
    Raises the gateway's NoEmbeddingModel / EmbeddingUnavailable."""
    pending = await run_db(_entries_to_embed, ids, all_entries)
    batch = settings.KNOWLEDGE_EMBED_BATCH
    done = 0
    for start in range(0, len(pending), batch):
        chunk = pending[start : start + batch]
        result = await _embed([f"{question}\n{answer}" for _, question, answer, _ in chunk])
        done += await run_db(_store_vectors, chunk, result.model, result.vectors)
    return done


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
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        reason = "embedding timed out"
    else:
        reason = f"embedding unavailable: {type(exc).__name__}: {exc}"[:300]
    logger.info("knowledge search falls back to keyword: %s", reason)
    return reason


async def search(query: str, k: int = 5, *, hybrid: bool = True) -> SearchResult:
    """The `k` best entries for `query`: hybrid (vector + keyword) when embeddings are available,
    keyword only otherwise (the result says which path ran and why)."""
    started = time.perf_counter()
    index = await INDEX.get()
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
        # Off the answer's path: the gap is written in the background.
        aio.spawn(run_db(record_gap, result.query, "keyword_fallback"), what="recording a knowledge gap")
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


async def offline_answer(messages) -> str | None:
    """The best hit's answer for the last user message when its score clears the threshold, else None.

    Keyword path only: no LLM and no embedding call (the offline provider runs when those are down).
    """
    question = _last_user_text(messages)
    if not question.strip():
        return None
    best = (await search(question, k=1, hybrid=False)).best
    if best is not None and best.keyword_score >= settings.KNOWLEDGE_OFFLINE_MIN_SCORE:
        return best.answer
    return None


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


def propose_candidate(question: str, answer: str, source_reply_id=None) -> Candidate | None:
    """Queue a reply for review as a knowledge entry (redacted). Idempotent per source reply."""
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


def approve_candidate(
    candidate: Candidate, reviewer: str = "", question: str | None = None, answer: str | None = None
) -> Entry:
    """Turn a candidate into an entry of the "learned" document (searchable at once, embedded by a task)."""
    with transaction.atomic():
        document, _ = Document.objects.get_or_create(
            kind="learned", defaults={"title": "客服回复学习", "version": "auto"}
        )
        entry = new_entry(
            document,
            question=question or candidate.question,
            answer=answer or candidate.answer,
            section="learned",
            tags=["learned"],
        )
        entry.save()
        candidate.status = "approved"
        candidate.entry = entry
        candidate.reviewed_at = timezone.now()
        candidate.reviewed_by = reviewer
        candidate.save(update_fields=["status", "entry", "reviewed_at", "reviewed_by"])
        INDEX.bump()
        enqueue_embedding([entry.pk])
    return entry


def reject_candidate(candidate: Candidate, reviewer: str = "") -> None:
    candidate.status = "rejected"
    candidate.reviewed_at = timezone.now()
    candidate.reviewed_by = reviewer
    candidate.save(update_fields=["status", "reviewed_at", "reviewed_by"])


def record_gap(question: str, reason: str) -> Gap | None:
    """Count a question the knowledge base did not answer well (keyword fallback, human handoff)."""
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
