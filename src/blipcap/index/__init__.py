"""Search photos by text: an incremental index of captions, OCR text and embeddings.

>>> from blipcap.index import open_store, Indexer, IndexOptions   # doctest: +SKIP
>>> with open_store("photos.db") as store:                          # doctest: +SKIP
...     Indexer(store, captioner).run(["~/Pictures"])
...     store.search("birthday cake", limit=5)
"""

from __future__ import annotations

from .indexer import Indexer, IndexOptions, IndexSummary
from .open import default_db_path, open_store
from .store import (
    ImageRecord,
    PathRecord,
    SearchFilters,
    SearchHit,
    Store,
    WriteBatch,
    rrf_fuse,
)

__all__ = [
    "ImageRecord",
    "IndexOptions",
    "IndexSummary",
    "Indexer",
    "PathRecord",
    "SearchFilters",
    "SearchHit",
    "Store",
    "WriteBatch",
    "default_db_path",
    "open_store",
    "rrf_fuse",
]
