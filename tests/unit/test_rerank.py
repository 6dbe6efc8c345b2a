"""Reranking without a model: candidate counts, ordering by score, the JSON Lines record."""

from __future__ import annotations

import pytest

from blipcap.errors import OptionsError
from blipcap.options import PRESETS
from blipcap.rerank import Reranker, ranked, rerank, rerank_options
from blipcap.results import Caption, Confidence, ItemError, Provenance

PROVENANCE = Provenance(
    model="m", revision="r", backend="torch", dtype="float32", device="cpu", options={},
    blipcap_version="0",
)  # fmt: skip
RERANKER = Reranker("itm", "Salesforce/blip-itm-large-coco", "abc123")


@pytest.mark.parametrize(
    ("preset", "overrides", "beams", "k"),
    [
        (None, {}, 3, 3),  # greedy by default: three beams, all kept as candidates
        ("coco", {}, 3, 3),  # the coco preset's beams
        (None, {"num_beams": 5}, 5, 5),  # every beam asked for is a candidate
        (None, {"num_captions": 4}, 4, 4),  # K asked for: beams raised to K
        (None, {"num_captions": 1}, 1, 1),  # one caption: greedy, only verified
        (None, {"num_beams": 6, "num_captions": 2}, 6, 2),
        (None, {"do_sample": True, "seed": 1}, 1, 3),  # three samples
    ],
)
def test_rerank_options_candidates(preset, overrides, beams, k):
    opts = rerank_options(preset=preset, **overrides)
    assert (opts.num_beams, opts.num_captions) == (beams, k)
    base = PRESETS[preset or "default"]
    assert opts.max_new_tokens == base.max_new_tokens and opts.prompt == base.prompt


def test_rerank_options_keep_an_explicit_beam_width():
    """--beams 2 --num-captions 3 is refused as without --rerank, not silently widened."""
    with pytest.raises(OptionsError, match="num_captions=3 is more than num_beams=2"):
        rerank_options(num_beams=2, num_captions=3)


def test_ranked_orders_candidates_best_first_and_keeps_ties_in_order():
    sure = [Confidence(-0.1 * k, -0.2 * k, 4) for k in range(1, 5)]
    result = Caption(
        path="a.jpg",
        caption="one",
        captions=["one", "two", "three", "four"],
        provenance=PROVENANCE,
        confidences=sure,
    )
    out = ranked(result, [0.2, 0.7, 0.2, 0.9], RERANKER)
    assert out.captions == ["four", "two", "one", "three"]
    assert out.confidences == [sure[3], sure[1], sure[0], sure[2]]  # each stays with its caption
    assert out.caption == "four" and out.itm_score == 0.9
    assert out.itm_scores == [0.9, 0.7, 0.2, 0.2]
    record = out.to_record()
    assert list(record)[:8] == [
        "path", "caption", "captions", "confidence", "confidences", "itm_score", "itm_scores", "error"
    ]  # fmt: skip
    assert record["captions"] == out.captions and record["itm_scores"] == out.itm_scores
    assert record["model"] == "m"  # provenance unchanged
    assert record["rerank"] == {
        "method": "itm",
        "model": "Salesforce/blip-itm-large-coco",
        "revision": "abc123",
    }


def test_a_single_caption_gets_its_score_only():
    result = Caption(path="a.jpg", caption="one", captions=["one"], provenance=PROVENANCE)
    record = ranked(result, [0.25], RERANKER).to_record()
    assert record["caption"] == "one" and record["itm_score"] == 0.25
    assert "captions" not in record and "itm_scores" not in record


def test_random_weight_reranker_is_marked():
    record = Reranker("itm", "tiny", "local-1", random_weights=True).to_record()
    assert record["random_weights"] is True


class FakeScorer:
    """Scores a caption by its length; records what it was asked."""

    batch_size = 2
    reranker = RERANKER

    def __init__(self):
        self.calls = []

    def score_batch(self, images, captions):
        self.calls.append((list(images), [list(c) for c in captions]))
        return [[len(t) / 100 for t in texts] for texts in captions]


def test_rerank_scores_in_batches_and_passes_failures_through():
    ok = [
        Caption(path=f"{i}.jpg", caption="a", captions=["a", "abc", "ab"], provenance=PROVENANCE)
        for i in range(3)
    ]
    failed = Caption(path="bad.jpg", caption=None, error=ItemError("CorruptImageError", "bad"))
    scorer = FakeScorer()
    out = list(rerank([ok[0], failed, ok[1], ok[2]], ["im0", None, "im1", "im2"], scorer))
    assert [r.path for r in out] == ["0.jpg", "bad.jpg", "1.jpg", "2.jpg"]
    assert out[1] is failed
    assert [c[0] for c in scorer.calls] == [["im0", "im1"], ["im2"]]  # the failure is not scored
    assert all(r.captions == ["abc", "ab", "a"] for r in (out[0], out[2], out[3]))
    assert out[0].itm_scores == [0.03, 0.02, 0.01]


def test_rerank_needs_one_image_per_result():
    with pytest.raises(ValueError):
        list(rerank([Caption(path="a", caption="a")], [], FakeScorer()))
