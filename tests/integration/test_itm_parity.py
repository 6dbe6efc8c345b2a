"""The lean image-text matching model scores exactly as transformers' BlipForImageTextRetrieval.

fp32 on CPU, random-weight checkpoints in the exact Hugging Face layout (tiny,
and the full ``Salesforce/blip-itm-large-coco`` shape), real photographs and
generated images, captions of different lengths (so padding is exercised).
"""

from __future__ import annotations

import numpy as np
import pytest

from blipcap.rerank import ItmScorer
from tests.conftest import itm_checkpoint
from tests.conftest import sample_photos as photos

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
pytest.importorskip("skimage.data")

CAPTIONS = [
    "a cat on a mat",
    "two dogs playing in the snow with a red ball, next to a wooden fence",
    "a picture of a house",
    "an astronaut",
    "a cup of coffee on a saucer",
]


def reference(model, processor, image, captions: list[str], use_itm_head: bool = True):
    """transformers' scores for (image, caption) pairs, and the token ids it was given."""
    inputs = processor(
        images=[image] * len(captions), text=captions, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = model(
            pixel_values=inputs.pixel_values,
            input_ids=inputs.input_ids,
            attention_mask=inputs.attention_mask,
            use_itm_head=use_itm_head,
        ).itm_score
    ids = [
        row[: int(n)]
        for row, n in zip(inputs.input_ids.tolist(), inputs.attention_mask.sum(1), strict=True)
    ]
    if use_itm_head:
        return out.softmax(-1)[:, 1].tolist(), ids
    return out[0].tolist(), ids  # every row holds the same image: its similarities to each text


def _load(shape: str, seed: int):
    path = itm_checkpoint(shape, seed=seed)
    ref = transformers.BlipForImageTextRetrieval.from_pretrained(path).eval()
    proc = transformers.BlipProcessor.from_pretrained(path)
    scorer = ItmScorer(str(path), device="cpu", dtype="float32", batch_size=2)
    return ref, proc, scorer


@pytest.fixture(scope="module")
def tiny():
    return _load("tiny", 0)


def test_scores_equal_transformers(tiny):
    ref, proc, scorer = tiny
    images = photos()
    ours = scorer.score_batch(images, [CAPTIONS] * len(images))  # 3 forward passes of 2, 2, 1
    for image, got in zip(images, ours, strict=True):
        expected, ids = reference(ref, proc, image, CAPTIONS)
        assert [scorer.tokenizer.encode(c) for c in CAPTIONS] == ids
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        assert int(np.argmax(got)) == int(np.argmax(expected))  # the same caption is kept


def test_scores_are_not_blind(tiny):
    """The score depends on the image and on the caption (else parity would prove little)."""
    _, _, scorer = tiny
    scores = np.array(scorer.score_batch(photos(), [CAPTIONS] * 5))
    assert np.ptp(scores[:, 0]) > 0.05  # one caption, five images
    assert (np.ptp(scores, axis=1) > 1e-3).all()  # five captions, each image


def test_uneven_caption_counts_score_the_same(tiny):
    """Images with different numbers of captions are scored image by image, with the same results."""
    _, _, scorer = tiny
    images = photos()[:3]
    lists = [CAPTIONS[:1], CAPTIONS[1:4], []]
    got = scorer.score_batch(images, lists)
    assert got[2] == []
    for image, captions, scores in zip(images[:2], lists[:2], got[:2], strict=True):
        np.testing.assert_allclose(scores, scorer.score(image, captions), atol=1e-6, rtol=0)
        # A caption's score does not depend on its neighbours (padding, folding).
        np.testing.assert_allclose(
            scores, [scorer.score(image, [c])[0] for c in captions], atol=1e-6, rtol=0
        )


def test_itc_similarity_equals_transformers(tiny):
    ref, proc, scorer = tiny
    image = photos()[0]
    expected, _ = reference(ref, proc, image, CAPTIONS, use_itm_head=False)
    np.testing.assert_allclose(scorer.similarity(image, CAPTIONS), expected, atol=1e-5, rtol=0)


def test_preprocessing_equals_blip_image_processor(tiny):
    _, proc, scorer = tiny
    for image in photos():
        expected = proc(images=image, return_tensors="np").pixel_values[0]
        np.testing.assert_allclose(scorer.pixels(image), expected, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_published_large_shape():
    """The full blip-itm-large-coco shape (ViT-L/16 at 384 px, BERT-base text encoder)."""
    ref, proc, scorer = _load("large", 3)
    images = photos()[:2]
    captions = CAPTIONS[:3]
    ours = scorer.score_batch(images, [captions] * 2)
    for image, got in zip(images, ours, strict=True):
        expected, _ = reference(ref, proc, image, captions)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        assert int(np.argmax(got)) == int(np.argmax(expected))
    assert abs(ours[0][0] - ours[1][0]) > 1e-3  # the image reaches the score
    assert min(np.ptp(scores) for scores in ours) > 1e-4  # and so does the caption
