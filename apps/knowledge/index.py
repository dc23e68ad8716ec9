"""The in-process retrieval index: BM25 over analysed Chinese text plus a NumPy embedding matrix.

Plain Python + NumPy (no Django): `services` loads rows from the database into `IndexEntry`s and
builds one `RetrievalIndex` per process; the benchmark builds one from generated rows.

BM25 (Okapi, Lucene's non-negative idf) is computed through an inverted index whose postings hold
the precomputed per-document term weight, so a query costs one vector add per query term rather
than a pass over every document (rank-bm25's `get_scores` loops over all documents in Python:
~10 ms per term at 10,000 entries). The question / title field counts `TITLE_WEIGHT` times, and
bigram terms count `BIGRAM_WEIGHT` (see `text.py`).

Scores returned are calibrated to [0, 1]:
- keyword: BM25 divided by the BM25 the same query would get against an average-length entry whose
  title is exactly the query (terms unknown to the index count at the highest idf), so 1.0 means
  "every query term matched as if in the title", 0.3 "about a third of the query's information";
- vector: cosine similarity, clipped at 0;
- fused (hybrid): `alpha * vector + (1 - alpha) * keyword`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .text import BIGRAM_PREFIX, Analyzer

K1 = 1.2
B = 0.75
TITLE_WEIGHT = 3.0
BIGRAM_WEIGHT = 0.35
CUSTOM_WORD_WEIGHT = 2.0  # the admin's domain words (E01, 7kw, OCPP) identify an entry more than common words


@dataclass
class IndexEntry:
    id: int
    question: str
    answer: str
    document: str = ""
    version: str = ""
    section: str = ""
    tags: list[str] = field(default_factory=list)
    embedding: np.ndarray | None = None  # float32, any norm


class RetrievalIndex:
    def __init__(self, entries: list[IndexEntry], analyzer: Analyzer, embedding_model: str = "", version: str = ""):
        self.entries = entries
        self.analyzer = analyzer
        self.version = version
        self.embedding_model = embedding_model
        self.size = len(entries)
        self._build_bm25()
        self._build_vectors()

    # --- keyword ------------------------------------------------------------------------------
    def _term_weight(self, term: str) -> float:
        if term.startswith(BIGRAM_PREFIX):
            return BIGRAM_WEIGHT
        return CUSTOM_WORD_WEIGHT if self.analyzer.is_custom(term) else 1.0

    def _build_bm25(self) -> None:
        docs: list[Counter] = []
        lengths = np.zeros(self.size, dtype=np.float32)
        for i, entry in enumerate(self.entries):
            tf: Counter = Counter()
            for term in self.analyzer.document_tokens(entry.question):
                tf[term] += TITLE_WEIGHT
            for term in self.analyzer.document_tokens(entry.answer):
                tf[term] += 1.0
            docs.append(tf)
            lengths[i] = sum(tf.values())
        avgdl = float(lengths.mean()) if self.size else 1.0
        self.avgdl = avgdl or 1.0
        df: Counter = Counter()
        for tf in docs:
            df.update(tf.keys())
        n = self.size
        self.idf = {t: math.log(1.0 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.max_idf = math.log(1.0 + (n + 0.5) / 0.5) if n else 0.0
        postings: dict[str, tuple[list[int], list[float]]] = {}
        norm = K1 * (1 - B + B * lengths / self.avgdl)
        for i, tf in enumerate(docs):
            for term, f in tf.items():
                ids, weights = postings.setdefault(term, ([], []))
                ids.append(i)
                weights.append(self.idf[term] * self._term_weight(term) * f * (K1 + 1) / (f + norm[i]))
        self.postings = {
            t: (np.asarray(ids, dtype=np.int32), np.asarray(w, dtype=np.float32)) for t, (ids, w) in postings.items()
        }
        # Weight of a query term that sits once in the title of an average-length entry.
        self._ideal_tf = TITLE_WEIGHT * (K1 + 1) / (TITLE_WEIGHT + K1)

    def keyword_scores(self, query: str) -> tuple[np.ndarray, list[str]]:
        """Calibrated keyword score of every entry (see module doc) and the query's terms."""
        terms = dict.fromkeys(self.analyzer.tokens(query))  # a question's terms count once, in order
        scores = np.zeros(self.size, dtype=np.float32)
        ideal = 0.0
        for term in terms:
            ideal += self.idf.get(term, self.max_idf) * self._term_weight(term) * self._ideal_tf
            posting = self.postings.get(term)
            if posting is not None:
                ids, weights = posting
                scores[ids] += weights
        if ideal > 0:
            np.minimum(scores / ideal, 1.0, out=scores)
        return scores, list(terms)

    # --- vector -------------------------------------------------------------------------------
    def _build_vectors(self) -> None:
        rows = [e.embedding for e in self.entries]
        present = [r is not None for r in rows]
        self.vector_count = sum(present)
        if not self.vector_count:
            self.matrix = None
            return
        dim = next(len(r) for r in rows if r is not None)
        matrix = np.zeros((self.size, dim), dtype=np.float32)
        for i, row in enumerate(rows):
            if row is not None and len(row) == dim:
                matrix[i] = row
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        self.matrix = matrix / norms
        self.dim = dim

    @property
    def has_vectors(self) -> bool:
        return self.matrix is not None

    def vector_scores(self, query_vector) -> np.ndarray:
        q = np.asarray(query_vector, dtype=np.float32)
        if q.shape[0] != self.dim:
            raise ValueError(f"query vector has {q.shape[0]} dimensions, the index {self.dim}")
        norm = float(np.linalg.norm(q)) or 1.0
        # einsum's own single-threaded loop, not BLAS: OpenBLAS's threads made a 10,000 x 256 product
        # take 9 ms of wall time instead of 1.7 on a busy 2-core machine (spinning workers fighting
        # for the cores), for the same result.
        return np.maximum(np.einsum("ij,j->i", self.matrix, q / norm), 0.0)

    # --- ranking ------------------------------------------------------------------------------
    @staticmethod
    def top(scores: np.ndarray, k: int, min_score: float = 0.0) -> list[int]:
        if not len(scores) or k <= 0:
            return []
        k = min(k, len(scores))
        candidates = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        # Ties broken by position (entry order) so results are deterministic.
        ordered = sorted(candidates.tolist(), key=lambda i: (-float(scores[i]), i))
        return [i for i in ordered if scores[i] > min_score]
