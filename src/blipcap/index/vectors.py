"""Nearest neighbours over the in-memory embedding matrix.

Small indexes are scored exhaustively (one mat-vec). From ``EXACT_BELOW``
vectors on, a mat-vec reads the whole float32 matrix (150 MB at 100,000
images), so search first shortlists by 1-bit codes - the sign of each
dimension after centring on the corpus mean, compared by Hamming distance
(48 bytes per image) - and then scores the shortlist (the best 5%, at least
1,000) exactly. Hits and their similarities are exact; only an image whose
code ranks outside the shortlist can be missed. ``benchmarks/index.py``
measures the recall against exhaustive search.
"""

from __future__ import annotations

import numpy as np

EXACT_BELOW = 20_000
SHORTLIST_FRACTION = 0.05
MIN_SHORTLIST = 1000

_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount_rows(words: np.ndarray) -> np.ndarray:
    """Set bits per row of a (n, w) uint64 array."""
    if hasattr(np, "bitwise_count"):  # NumPy >= 2.0
        return np.bitwise_count(words).sum(axis=1, dtype=np.int32)
    return _POPCOUNT8[words.view(np.uint8)].sum(axis=1, dtype=np.int32)


class VectorIndex:
    def __init__(self, matrix: np.ndarray | None):
        self.matrix = matrix
        self.center: np.ndarray | None = None
        self.codes: np.ndarray | None = None
        if matrix is not None and len(matrix) >= EXACT_BELOW and matrix.shape[1] % 64 == 0:
            self.center = matrix.mean(axis=0)
            self.codes = self._encode(matrix)

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        bits = np.packbits(np.atleast_2d(vectors) > self.center, axis=1)
        return np.ascontiguousarray(bits).view(np.uint64)

    def top(
        self, query: np.ndarray, k: int, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers of the ``k`` most similar vectors (among ``rows`` if given) and their
        cosine similarities (vectors are unit length), best first."""
        from .embeddings import one_blas_thread

        if self.matrix is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        query = np.asarray(query, dtype=np.float32)
        candidates = rows
        n = len(self.matrix) if rows is None else len(rows)
        if self.codes is not None and n >= EXACT_BELOW:
            codes = self.codes if rows is None else self.codes[rows]
            distance = _popcount_rows(codes ^ self._encode(query))
            size = min(n, max(MIN_SHORTLIST, int(SHORTLIST_FRACTION * n), 20 * k))
            short = np.argpartition(distance, size - 1)[:size]
            candidates = short if rows is None else rows[short]
        with one_blas_thread():  # a mat-vec is memory-bound: threads only add hand-off cost
            if candidates is None:
                scores = self.matrix @ query
            else:
                scores = (
                    self.matrix[candidates] @ query if len(candidates) else np.zeros(0, np.float32)
                )
        if not len(scores):
            return np.zeros(0, np.int64), scores
        k = min(k, len(scores))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        index = best if candidates is None else candidates[best]
        return index, scores[best]
