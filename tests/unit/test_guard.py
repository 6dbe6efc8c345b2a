"""The degeneration guard over scripted backends: detection, re-decoding only affected images, marks."""

from __future__ import annotations

import numpy as np
import pytest

from blipcap.arrays import NumpyOps
from blipcap.decoding import SpecialTokens, generate
from blipcap.guard import detect, fallbacks, is_repetitive
from blipcap.options import PRESETS, CaptionOptions, resolve_options

WORDS = "[pad] [bos] [eos] a bald man arafed this image shows dog cat hat on top of".split()
PAD, BOS, EOS = 0, 1, 2
A, BALD, MAN, ARAFED, THIS, IMAGE, SHOWS, DOG, CAT, HAT, ON, TOP, OF = range(3, 16)
V = len(WORDS)
SPECIAL = SpecialTokens(eos=EOS, pad=PAD)


def text(tokens) -> str:
    return " ".join(WORDS[t] for t in tokens)


def check(tokens):
    return detect(text(tokens))


class RecordingBackend:
    """Logits depend on the image and the last token; records which images each pass decodes."""

    ops = NumpyOps()

    def __init__(self, table: np.ndarray):
        self.table = table
        self.passes: list[list[int]] = []

    def start(self, pixel_values, rows_per_image, max_len):
        images = [int(i) for i in pixel_values[:, 0, 0, 0]]  # each image's pixels hold its index
        self.passes.append(images)
        table, rows = self.table, np.repeat(images, rows_per_image)

        class Session:
            def step(self, input_ids):
                return table[rows, input_ids[:, -1]].astype(np.float32)

            def reorder(self, order):
                pass

        return Session()


def chains(*per_image: list[tuple[int, int, float]]) -> np.ndarray:
    t = np.full((len(per_image), V, V), -5.0)
    for image, edges in enumerate(per_image):
        for src, dst, logit in edges:
            t[image, src, dst] = logit
    return t


LOOP = [(BOS, A, 3), (A, BALD, 3), (BALD, BALD, 3), (BALD, MAN, 2), (MAN, EOS, 3)]
# Greedy takes "arafed" (3.0 against 2.9) into a flat, unsure continuation; "a" leads to
# "a man" with a sure one, which beam search finds.
ARTIFACT = [
    (BOS, ARAFED, 3.0), (BOS, A, 2.9), (ARAFED, MAN, 1), (ARAFED, DOG, 0.9), (ARAFED, CAT, 0.9),
    (A, MAN, 6), (MAN, EOS, 6), (DOG, EOS, 6), (CAT, EOS, 6),
]  # fmt: skip
BOILERPLATE = [
    (BOS, THIS, 3.0), (BOS, A, 2.9), (THIS, IMAGE, 1), (THIS, HAT, 0.9), (THIS, TOP, 0.9),
    (IMAGE, SHOWS, 1), (IMAGE, HAT, 0.9), (IMAGE, TOP, 0.9), (SHOWS, A, 1),
    (A, DOG, 6), (DOG, EOS, 6), (HAT, EOS, 6), (TOP, EOS, 6),
]  # fmt: skip
CLEAN = [(BOS, A, 3), (A, CAT, 3), (CAT, EOS, 3)]


def decode(table, **overrides):
    backend = RecordingBackend(table)
    pixels = np.zeros((table.shape[0], 3, 2, 2), np.float32)
    pixels[:, 0, 0, 0] = np.arange(table.shape[0])
    o = resolve_options(max_new_tokens=8, **overrides)
    out = generate(backend, pixels, [BOS], o, SPECIAL, check=check)
    return [[text(c) for c in per] for per in out], [per[0].guard for per in out], backend.passes


def test_detects_each_failure_and_leaves_plain_captions_alone():
    assert detect("a bald bald bald man") == ("repeat",)
    assert detect("a hat on top of a hat on top of") == ("repeat",)
    assert detect("a cake on top of a plate on top of a table on top of") == ("repeat",)
    assert detect("two araffe giraffes") == ("artifact",)
    assert detect("arafed man with arafed hat") == ("artifact",)
    for lead_in in ("this image shows", "a picture of", "an image of", "this is a photo of"):
        assert detect(f"{lead_in} a dog") == ("boilerplate",), lead_in
    assert detect("a picture of a dog", prompted=True) == ()
    for fine in (
        "a man with a hat and a dog on a bench",
        "a man in a white shirt and a man in a black shirt",
        "a photo of a dog",  # a plain caption, not BLIP's boilerplate
        "a picture frame on a wall",
        "a dog dog",
    ):
        assert detect(fine) == (), fine
    assert not is_repetitive([])


def test_only_the_affected_images_are_decoded_again_and_marked():
    texts, reports, passes = decode(chains(CLEAN, LOOP, ARTIFACT, BOILERPLATE, CLEAN))
    assert passes[0] == [0, 1, 2, 3, 4]
    assert all(0 not in p and 4 not in p for p in passes[1:])  # the clean images: never again
    assert passes[1] == [1, 2, 3]  # no-repeat blocking for all three ...
    # ... which fixes the loop only; beams for the other two, one image at a time (3 rows each,
    # as many as the first pass's 5 allow).
    assert passes[2:] == [[2], [3]]
    assert texts == [["a cat"], ["a bald bald man"], ["a man"], ["a dog"], ["a cat"]]
    assert reports[0] is None and reports[4] is None
    assert reports[1].to_dict() == {
        "detected": ["repeat"], "action": "no_repeat_ngram=2", "resolved": True,
    }  # fmt: skip
    assert reports[2].to_dict() == {
        "detected": ["artifact"], "action": "beams=3,no_repeat_ngram=2", "resolved": True,
    }  # fmt: skip
    assert reports[3].detected == ("boilerplate",) and reports[3].resolved


def test_unresolved_keeps_the_least_bad_attempt_and_says_so():
    hopeless = [(BOS, ARAFED, 5), (ARAFED, MAN, 5), (MAN, EOS, 5)]
    texts, reports, passes = decode(chains(hopeless))
    assert texts == [["arafed man"]] and len(passes) == 3
    assert reports[0].to_dict() == {"detected": ["artifact"], "action": "none", "resolved": False}


def test_the_redecoded_caption_keeps_its_own_confidence():
    backend = RecordingBackend(chains(LOOP))
    o = resolve_options(max_new_tokens=8)
    ((first,),) = generate(backend, np.zeros((1, 3, 2, 2), np.float32), [BOS], o, SPECIAL)
    ((fixed,),) = generate(
        RecordingBackend(chains(LOOP)), np.zeros((1, 3, 2, 2), np.float32), [BOS], o, SPECIAL,
        check=check,
    )  # fmt: skip
    assert text(first).startswith("a bald bald bald") and text(fixed) == "a bald bald man"
    # The blocked step's token ("man" where the loop wanted "bald") scores as the model sees it.
    assert len(fixed.logprobs) == 5 and fixed.logprobs[:3] == first.logprobs[:3]
    assert fixed.logprobs[3] < first.logprobs[3]


def test_guard_off_decodes_once_and_marks_nothing():
    table = chains(LOOP, ARTIFACT)
    for off in ({"guard": False}, {"preset": "coco", "max_length": 10, "prompt": None}):
        backend = RecordingBackend(table)
        o = resolve_options(**off)
        out = generate(backend, np.zeros((2, 3, 2, 2), np.float32), [BOS], o, SPECIAL, check=check)
        assert len(backend.passes) == 1 and all(c.guard is None for per in out for c in per)


def test_on_in_the_default_preset_only():
    assert PRESETS["default"].guard and not PRESETS["coco"].guard
    assert not CaptionOptions().guard  # options built field by field: transformers' decoding
    assert resolve_options().guard and not resolve_options(preset="coco").guard


def test_fallbacks_in_order_without_repeating_an_attempt():
    greedy = [name for name, _ in fallbacks(resolve_options())]
    assert greedy == ["no_repeat_ngram=2", "beams=3,no_repeat_ngram=2"]
    wide = fallbacks(resolve_options(num_beams=4))
    assert [name for name, _ in wide] == ["no_repeat_ngram=2"]  # the beams are already there
    sampled = dict(fallbacks(resolve_options(do_sample=True, num_captions=5, seed=1)))
    assert sampled["beams=5,no_repeat_ngram=2"].num_beams == 5
    assert not sampled["beams=5,no_repeat_ngram=2"].do_sample
    stricter = fallbacks(resolve_options(no_repeat_ngram_size=1))
    assert [name for name, _ in stricter] == ["beams=3,no_repeat_ngram=1"]  # 1 is kept


@pytest.mark.parametrize("captions", [1, 3])
def test_redecoding_never_runs_more_rows_than_the_first_pass(captions):
    table = chains(*[LOOP if i % 2 else ARTIFACT for i in range(6)])
    rows: list[int] = []

    class Counting(RecordingBackend):
        def start(self, pixel_values, rows_per_image, max_len):
            rows.append(pixel_values.shape[0] * rows_per_image)
            return super().start(pixel_values, rows_per_image, max_len)

    pixels = np.zeros((6, 3, 2, 2), np.float32)
    pixels[:, 0, 0, 0] = np.arange(6)
    extra = {"do_sample": True, "num_captions": captions, "seed": 0} if captions > 1 else {}
    o = resolve_options(max_new_tokens=8, **extra)
    generate(Counting(table), pixels, [BOS], o, SPECIAL, check=check)
    assert len(rows) > 2 and max(rows) <= rows[0]
