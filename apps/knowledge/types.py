"""What `apps.knowledge.services.search()` returns."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Hit:
    entry_id: int
    title: str  # the entry's question / chunk title
    answer: str
    score: float  # calibrated, 0..1 (fused on the hybrid path, keyword score on the keyword path)
    keyword_score: float
    vector_score: float | None  # None when the vector path did not run
    document: str = ""
    version: str = ""
    section: str = ""
    tags: tuple[str, ...] = ()

    @property
    def citation(self) -> dict:
        return {"entry_id": self.entry_id, "document": self.document, "version": self.version, "section": self.section}


@dataclass
class SearchResult:
    query: str
    hits: list[Hit] = field(default_factory=list)
    path: str = "keyword"  # "hybrid" (vector + keyword fused) | "keyword"
    fallback: bool = False  # True when the vector path should have run but could not
    fallback_reason: str = ""  # e.g. "embedding unavailable: …", "no embeddings in the index"
    terms: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    embed_ms: float = 0.0

    @property
    def best(self) -> Hit | None:
        return self.hits[0] if self.hits else None
