"""Exhaustive and shortlisted nearest-neighbour search over the embedding matrix."""

from __future__ import annotations

import numpy as np

from blipcap.index import vectors
from blipcap.index.vectors import VectorIndex, _popcount_rows


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def corpus(n: int, seed: int = 0) -> np.ndarray:
    # Clustered like real caption embeddings: 200 topics plus noise.
    rng = np.random.default_rng(seed)
    topics = unit(rng.normal(size=(200, 384)))
    return unit(topics[rng.integers(0, 200, n)] + 0.08 * rng.normal(size=(n, 384)))


def test_small_index_is_exhaustive_and_exact():
    matrix = corpus(500)
    index = VectorIndex(matrix)
    assert index.codes is None
    query = matrix[7]
    rows, scores = index.top(query, 5)
    exact = np.argsort(-(matrix @ query))[:5]
    assert rows.tolist() == exact.tolist()
    assert np.allclose(scores, (matrix @ query)[exact])
    only = np.array([3, 9, 11])
    rows, _ = index.top(query, 10, only)
    assert sorted(rows.tolist()) == [3, 9, 11]
    assert index.top(query, 3, np.array([], dtype=np.int64))[0].tolist() == []


def test_large_index_shortlists_by_codes_with_high_recall(monkeypatch):
    monkeypatch.setattr(vectors, "EXACT_BELOW", 2000)
    monkeypatch.setattr(vectors, "MIN_SHORTLIST", 200)
    matrix = corpus(20000)
    index = VectorIndex(matrix)
    assert index.codes.shape == (20000, 6) and index.codes.dtype == np.uint64
    rng = np.random.default_rng(1)
    hits = 0
    for q in unit(matrix[rng.integers(0, 20000, 30)] + 0.05 * rng.normal(size=(30, 384))):
        rows, scores = index.top(q, 10)
        exact = set(np.argsort(-(matrix @ q))[:10].tolist())
        hits += len(exact & set(rows.tolist()))
        assert np.allclose(scores, matrix[rows] @ q)  # similarities are exact, best first
        assert list(scores) == sorted(scores, reverse=True)
    assert hits / 300 >= 0.95
    # With a filter that keeps few rows, scoring is exhaustive over them.
    only = np.arange(0, 20000, 50)
    rows, _ = index.top(matrix[100], 10, only)
    assert rows[0] == 100 and set(rows.tolist()) <= set(only.tolist())


def test_popcount_fallback_matches():
    words = np.array([[0, 1, 2**63, 2**64 - 1]], dtype=np.uint64)
    assert _popcount_rows(words).tolist() == [0 + 1 + 1 + 64]
    table = vectors._POPCOUNT8[words.view(np.uint8)].sum(axis=1)
    assert table.tolist() == [66]
