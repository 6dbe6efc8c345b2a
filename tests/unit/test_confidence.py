"""Confidence: the decoder's own per-token log-probabilities, checked by hand on scripted logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_decoding import BOS, EOS, SPECIAL, ScriptedBackend, chain, run

from blipcap.decoding import Decoded, generate
from blipcap.options import resolve_options
from blipcap.results import Caption, Confidence, GuardReport, ItemError


def logsoftmax(row) -> np.ndarray:
    row = np.asarray(row, np.float64)
    return row - np.log(np.exp(row - row.max()).sum()) - row.max()


def expected(table, image: int, path: list[int]) -> list[float]:
    """log_softmax of the scripted logits at each step along ``path`` (which starts at BOS)."""
    return [logsoftmax(table[image, a])[b] for a, b in zip(path, path[1:], strict=False)]


def test_greedy_logprobs_are_the_log_softmax_of_the_chosen_tokens_and_the_eos():
    t = chain((0, BOS, 5, 3), (0, 5, 6, 2), (0, 6, EOS, 4))
    ((caption,),) = run(t)
    assert isinstance(caption, Decoded) and caption == [5, 6] and caption.ended
    assert caption.logprobs == pytest.approx(expected(t, 0, [BOS, 5, 6, EOS]), abs=1e-6)
    c = Confidence.from_logprobs(caption.logprobs)
    assert c.tokens == 3 and c.min_logprob == pytest.approx(min(caption.logprobs))
    assert c.score == pytest.approx(math.exp(sum(caption.logprobs) / 3))


def test_a_caption_cut_at_the_length_limit_scores_only_its_tokens():
    t = chain((0, BOS, 5, 3), (0, 5, 5, 3))
    ((caption,),) = run(t, max_new_tokens=4)
    assert caption == [5, 5, 5, 5] and not caption.ended
    assert caption.logprobs == pytest.approx(expected(t, 0, [BOS, 5, 5, 5, 5]), abs=1e-6)


def test_logprobs_are_the_models_before_penalties_and_sampling_warpers():
    t = chain((0, BOS, 5, 3), (0, 5, 5, 3.0), (0, 5, 6, 2.5), (0, 6, EOS, 3))
    ((caption,),) = run(t, max_new_tokens=3, repetition_penalty=2.0)
    assert caption == [5, 6]  # the penalty moved the choice off 5 ...
    # ... but 6's log-probability is the model's, not the penalized distribution's.
    assert caption.logprobs == pytest.approx(expected(t, 0, [BOS, 5, 6, EOS]), abs=1e-6)
    ((sampled,),) = run(t, do_sample=True, temperature=0.3, seed=1, max_new_tokens=4)
    assert sampled.logprobs == pytest.approx(
        expected(t, 0, [BOS, *sampled, EOS][: len(sampled.logprobs) + 1]), abs=1e-6
    )


def test_beam_search_gives_each_finished_hypothesis_its_own_token_logprobs():
    t = chain(
        (0, BOS, 4, 2.0), (0, BOS, 5, 1.5), (0, 4, 7, 0.0), (0, 4, 6, 0.0), (0, 4, 3, 0.0),
        (0, 5, 6, 6.0), (0, 6, EOS, 6.0), (0, 7, EOS, 6.0), (0, 3, EOS, 6.0),
    )  # fmt: skip
    ((best, second),) = run(t, max_new_tokens=5, num_beams=3, num_captions=2)
    assert best == [5, 6]
    assert best.logprobs == pytest.approx(expected(t, 0, [BOS, 5, 6, EOS]), abs=1e-5)
    assert second.logprobs == pytest.approx(expected(t, 0, [BOS, *second, EOS]), abs=1e-5)
    # Not the length-penalized beam score: the mean is over the tokens themselves.
    assert Confidence.from_logprobs(best.logprobs).tokens == 3


def test_several_images_and_samples_each_get_their_own_logprobs():
    t = chain((0, BOS, 5, 3), (0, 5, EOS, 3), (1, BOS, 6, 1), (1, 6, EOS, 5), images=2)
    (a,), (b,) = run(t, images=2)
    assert a.logprobs == pytest.approx(expected(t, 0, [BOS, 5, EOS]), abs=1e-6)
    assert b.logprobs == pytest.approx(expected(t, 1, [BOS, 6, EOS]), abs=1e-6)
    samples = run(t, images=2, do_sample=True, num_captions=3, seed=0, max_new_tokens=3)
    for image, per_image in enumerate(samples):
        for s in per_image:
            path = [BOS, *s] + ([EOS] if s.ended else [])
            assert s.logprobs == pytest.approx(expected(t, image, path), abs=1e-6)


def test_torch_ops_give_the_same_logprobs():
    torch = pytest.importorskip("torch")
    from blipcap.arrays import TorchOps

    t = chain((0, BOS, 4, 2.0), (0, BOS, 5, 1.5), (0, 4, 6, 0.0), (0, 5, 6, 6.0), (0, 6, EOS, 6.0))

    class TorchScripted(ScriptedBackend):
        ops = TorchOps("cpu")

        def start(self, pixel_values, rows_per_image, max_len):
            inner = super().start(pixel_values, rows_per_image, max_len)
            table = torch.from_numpy(self.table).float()

            class Session:
                def step(self, input_ids):
                    return table[torch.as_tensor(inner.rows), input_ids[:, -1]].clone()

                def reorder(self, rows):
                    pass

            return Session()

    px = np.zeros((1, 3, 4, 4), np.float32)
    for o in (dict(max_new_tokens=5), dict(max_new_tokens=5, num_beams=2)):
        opts = resolve_options(**o)
        ((want,),) = generate(ScriptedBackend(t), px, [BOS], opts, SPECIAL)
        ((got,),) = generate(TorchScripted(t), px, [BOS], opts, SPECIAL)
        assert got == want and got.logprobs == pytest.approx(want.logprobs, abs=1e-6)


def test_decoded_is_the_plain_token_list_to_every_consumer():
    d = Decoded([5, 6], [-0.1, -0.2, -0.3], ended=True)
    assert d == [5, 6] and list(d) == [5, 6] and [d] == [[5, 6]]


def test_records_carry_confidence_per_caption_and_the_guards_report():
    one = Confidence.from_logprobs([-0.1, -0.5, -0.3])
    two = Confidence.from_logprobs([-2.0, -4.0])
    rec = Caption("a.jpg", "a dog", ["a dog"], confidences=[one]).to_record()
    assert rec["confidence"] == {
        "score": 0.7408, "mean_logprob": -0.3, "min_logprob": -0.5, "tokens": 3,
    }  # fmt: skip
    assert "confidences" not in rec and "guard" not in rec
    many = Caption(
        "b.jpg", "x", ["x", "y"], confidences=[one, two],
        guard=GuardReport(("repeat",), "no_repeat_ngram=2", True),
    ).to_record()  # fmt: skip
    assert many["confidence"] == one.to_dict()
    assert many["confidences"] == [one.to_dict(), two.to_dict()]
    assert many["confidences"][1]["score"] == pytest.approx(math.exp(-3.0), rel=1e-3)
    assert many["guard"] == {
        "detected": ["repeat"],
        "action": "no_repeat_ngram=2",
        "resolved": True,
    }
    failed = Caption("c.jpg", None, error=ItemError("InputError", "broken")).to_record()
    assert failed["confidence"] is None
    assert Confidence.from_logprobs([]) is None
