"""The index's storage interface, shared records, and the parts of search both stores use.

Two stores implement :class:`Store`: SQLite (the default, one file) and
PostgreSQL (``postgresql://...``, for shared deployments). The indexer and
``blipcap search`` talk only to this interface.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from ..errors import OptionsError

RRF_K = 60
"""Reciprocal rank fusion constant (Cormack et al. 2009): score = sum of 1 / (k + rank)."""

SEARCH_MODES = ("hybrid", "text", "semantic")
DEFAULT_MIN_SIMILARITY = 0.2
"""Semantic hits below this cosine similarity are dropped: all-MiniLM-L6-v2 puts unrelated
texts at roughly 0.0-0.15, so without a floor every query would "match" every image."""


@dataclass
class ImageRecord:
    """Everything the index keeps about one image content (one SHA-256)."""

    sha256: str
    width: int
    height: int
    format: str
    bytes: int
    caption: str | None
    captions: list[str] = field(default_factory=list)
    ocr_text: str = ""
    ocr_engine: str | None = None
    existing_description: str | None = None
    """A description the file already had (XMP sidecar, embedded XMP or EXIF); kept as is."""
    taken_at: str | None = None
    """EXIF DateTimeOriginal as ISO 8601, or None."""
    date: str | None = None
    """taken_at, or the file's modification time when there is no EXIF date (filters use it)."""
    camera: str | None = None
    provenance: dict[str, Any] | None = None
    thumbnail: bytes | None = None
    embedding: np.ndarray | None = None
    embedding_model: str | None = None

    @property
    def has_text(self) -> bool:
        return bool(self.ocr_text.strip())

    def search_text(self) -> str:
        """What the embedding is computed from."""
        parts = [self.caption or "", self.existing_description or "", self.ocr_text]
        return "\n".join(p for p in parts if p)


@dataclass(frozen=True)
class PathRecord:
    path: str
    sha256: str
    size: int
    mtime_ns: int


@dataclass
class WriteBatch:
    """One transaction: new image contents, path links, and removed paths."""

    images: list[ImageRecord] = field(default_factory=list)
    links: list[PathRecord] = field(default_factory=list)
    removals: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images) + len(self.links) + len(self.removals)


@dataclass(frozen=True)
class SearchFilters:
    folder: str | None = None
    """Only images with a path under this folder (recursive)."""
    since: str | None = None
    """ISO date or datetime, inclusive."""
    until: str | None = None
    """ISO date or datetime, inclusive (a bare date covers the whole day)."""
    has_text: bool | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.folder, self.since, self.until, self.has_text))

    def folder_range(self) -> tuple[str, str] | None:
        """[low, high) bounds on the path column that select everything under ``folder``."""
        if self.folder is None:
            return None
        prefix = os.path.abspath(self.folder).rstrip(os.sep) + os.sep
        return prefix, prefix[:-1] + chr(ord(os.sep) + 1)

    def date_bounds(self) -> tuple[str | None, str | None]:
        return (_normalize_date(self.since, end=False), _normalize_date(self.until, end=True))


@dataclass
class SearchHit:
    sha256: str
    path: str
    paths: list[str]
    score: float
    caption: str | None
    snippet: str
    has_text: bool
    date: str | None
    camera: str | None
    text_rank: int | None = None
    semantic_rank: int | None = None
    similarity: float | None = None
    existing_description: str | None = None
    random_weights: bool = False
    """The caption came from a random-weight test checkpoint: meaningless, never to be shown as real."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "paths": self.paths,
            "score": round(self.score, 6),
            "caption": self.caption,
            "description": self.existing_description,
            "snippet": self.snippet,
            "has_text": self.has_text,
            "date": self.date,
            "camera": self.camera,
            "sha256": self.sha256,
            "text_rank": self.text_rank,
            "semantic_rank": self.semantic_rank,
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "random_weights": self.random_weights,
        }


class Store(ABC):
    """Where the index lives. Every write method is one transaction."""

    url: str

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def paths_under(self, roots: Sequence[str]) -> dict[str, PathRecord]:
        """Known paths equal to or under any of ``roots`` (absolute paths)."""

    @abstractmethod
    def existing_hashes(self, hashes: Iterable[str]) -> set[str]:
        """Which of ``hashes`` already have an image row."""

    @abstractmethod
    def write(self, batch: WriteBatch) -> list[str]:
        """Apply ``batch`` atomically; returns the paths whose link could not be made
        (their content was removed meanwhile by another indexer)."""

    @abstractmethod
    def get_image(self, sha256: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def captions_for(self, paths: Sequence[str]) -> dict[str, tuple[str | None, dict | None]]:
        """path -> (caption, provenance) for paths in the index."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """{"images": N, "paths": N, "with_text": N}"""

    @abstractmethod
    def text_search(
        self, query: str, filters: SearchFilters, limit: int
    ) -> list[tuple[str, float]]:
        """(sha256, bm25-like score) best first."""

    @abstractmethod
    def semantic_search(
        self, vector: np.ndarray, filters: SearchFilters, limit: int, min_similarity: float
    ) -> list[tuple[str, float]]:
        """(sha256, cosine similarity) best first."""

    @abstractmethod
    def hit_details(
        self, hashes: Sequence[str], query: str, filters: SearchFilters
    ) -> dict[str, dict]:
        """sha256 -> {caption, paths, snippet, has_text, date, camera, existing_description,
        random_weights}."""

    def search(
        self,
        query: str,
        *,
        embedder: Any = None,
        filters: SearchFilters | None = None,
        limit: int = 10,
        mode: str = "hybrid",
        min_similarity: float = DEFAULT_MIN_SIMILARITY,
    ) -> list[SearchHit]:
        """Hybrid search: BM25 full text and embedding similarity, fused by reciprocal rank."""
        if mode not in SEARCH_MODES:
            raise OptionsError(
                f"unknown search mode {mode!r}; choose one of {', '.join(SEARCH_MODES)}"
            )
        if limit < 1:
            raise OptionsError("--limit must be at least 1")
        filters = filters or SearchFilters()
        depth = max(50, 5 * limit)  # fuse over deeper lists than we show
        text_hits: list[tuple[str, float]] = []
        semantic_hits: list[tuple[str, float]] = []
        pending = None
        if mode in ("hybrid", "text") and query.strip():
            if mode == "hybrid":  # the database ranks words while this thread embeds the query
                pending = _SEARCH_POOL.submit(self.text_search, query, filters, depth)
            else:
                text_hits = self.text_search(query, filters, depth)
        try:
            if mode in ("hybrid", "semantic") and query.strip():
                if embedder is None:
                    from .embeddings import get_embedder

                    embedder = get_embedder()
                vector = embedder.embed_one(query)
                semantic_hits = self.semantic_search(vector, filters, depth, min_similarity)
        finally:
            # Always join the text search, even when the semantic half failed: the
            # store must not be closed while the other thread still uses it.
            if pending is not None:
                text_hits = pending.result()
        fused = rrf_fuse([[h for h, _ in text_hits], [h for h, _ in semantic_hits]])[:limit]
        details = self.hit_details([h for h, _ in fused], query, filters)
        text_rank = {h: i + 1 for i, (h, _) in enumerate(text_hits)}
        sem = {h: (i + 1, s) for i, (h, s) in enumerate(semantic_hits)}
        hits = []
        for sha, score in fused:
            d = details.get(sha)
            if d is None:  # removed between the two queries
                continue
            hits.append(
                SearchHit(
                    sha256=sha,
                    path=d["paths"][0],
                    paths=d["paths"],
                    score=score,
                    caption=d["caption"],
                    snippet=d["snippet"],
                    has_text=d["has_text"],
                    date=d["date"],
                    camera=d["camera"],
                    existing_description=d.get("existing_description"),
                    random_weights=bool(d.get("random_weights")),
                    text_rank=text_rank.get(sha),
                    semantic_rank=sem[sha][0] if sha in sem else None,
                    similarity=sem[sha][1] if sha in sem else None,
                )
            )
        return hits


_SEARCH_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="blipcap-search")


def rrf_fuse(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of ranked id lists; ties keep first-seen order."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


_WORD = re.compile(r"\w+", re.UNICODE)


# Words that match nearly every caption ("a dog on the beach"): leaving them in the
# full-text query makes BM25 score every row, which is slow on big indexes and adds
# nothing to the ranking. PostgreSQL's english configuration drops these itself.
STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was were "
    "with what which who whom into onto over under".split()
)


def query_terms(query: str) -> list[str]:
    """The words of a free-text query, lower-cased, without operators, punctuation or stopwords
    (unless the query is nothing but stopwords)."""
    words = [w.lower() for w in _WORD.findall(query)]
    content = [w for w in words if w not in STOPWORDS]
    return content or words


def fallback_snippet(caption: str | None, ocr_text: str, width: int = 160) -> str:
    text = " ".join((ocr_text or caption or "").split())
    return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + "…"


def _normalize_date(value: str | None, end: bool) -> str | None:
    if value is None:
        return None
    try:
        if len(value) == 10:  # a bare date: the whole day
            datetime.strptime(value, "%Y-%m-%d")
            return value + ("T23:59:59.999999" if end else "T00:00:00")
        return datetime.fromisoformat(value).isoformat()
    except ValueError:
        raise OptionsError(
            f"not a date: {value!r}; use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS"
        ) from None
