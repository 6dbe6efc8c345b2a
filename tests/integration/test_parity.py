"""The lean engine is token-identical to transformers' BlipForConditionalGeneration.generate.

fp32 on CPU, random-weight checkpoints of several shapes (including the full
BLIP-large shape), real photographs shipped by scikit-image plus generated
images, greedy / beam search (the coco preset) / a prompt / several captions.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from blipcap import Captioner, resolve_options
from tests.conftest import checkpoint
from tests.conftest import sample_photos as photos

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
pytest.importorskip("skimage.data")


def parity_options(**spec):
    """Options for a comparison with transformers: without the degeneration guard.

    The ``default`` preset's guard decodes loops and artifacts again (random
    weights loop often); transformers' ``generate`` keeps them.
    """
    return resolve_options(**spec, guard=False)


CASES = {
    "greedy": dict(preset="default", overrides=dict(max_new_tokens=20)),
    "coco-beam": dict(preset="coco", overrides={}),
    "prompt": dict(preset="default", overrides=dict(prompt="a photography of", max_new_tokens=12)),
    "beam-k-captions": dict(
        preset="default", overrides=dict(num_beams=4, num_captions=3, max_new_tokens=10)
    ),
    "penalties": dict(
        preset="default",
        overrides=dict(
            repetition_penalty=1.5, no_repeat_ngram_size=2, min_new_tokens=6, max_new_tokens=10
        ),
    ),
}


def reference_tokens(model, processor, images, options, prompt_len: int) -> list[list[int]]:
    """What transformers generates, cut at [SEP], without the prompt."""
    return [
        row[prompt_len:] for row in reference_rows(model, processor, images, options, prompt_len)
    ]


def reference_rows(model, processor, images, options, prompt_len: int) -> list[list[int]]:
    """What transformers generates, cut at [SEP], prompt included."""
    min_len, max_len = options.token_limits(prompt_len)
    kwargs = dict(
        max_length=max_len,
        min_length=min_len,
        num_beams=options.num_beams,
        num_return_sequences=options.num_captions,
        repetition_penalty=options.repetition_penalty,
        no_repeat_ngram_size=options.no_repeat_ngram_size,
        length_penalty=options.length_penalty,
        do_sample=False,
    )
    if options.prompt:
        inputs = processor(images=images, text=[options.prompt] * len(images), return_tensors="pt")
        out = model.generate(
            pixel_values=inputs.pixel_values,
            input_ids=inputs.input_ids,
            attention_mask=inputs.attention_mask,
            **kwargs,
        )
    else:
        inputs = processor(images=images, return_tensors="pt")
        out = model.generate(pixel_values=inputs.pixel_values, **kwargs)
    rows = []
    for row in out.tolist():
        tokens = row[:prompt_len]
        for t in row[prompt_len:]:
            if t == model.config.text_config.sep_token_id:
                break
            tokens.append(t)
        rows.append(tokens)
    return rows


def our_tokens(cap: Captioner, images, options) -> list[list[int]]:
    pixels = np.stack([cap.preprocess(im) for im in images])
    return [caption for per_image in cap.generate_tokens(pixels, options) for caption in per_image]


def _load(shape: str, seed: int):
    path = checkpoint(shape, seed=seed)
    ref = transformers.BlipForConditionalGeneration.from_pretrained(path).eval()
    proc = transformers.BlipProcessor.from_pretrained(path)
    cap = Captioner(str(path), backend="torch", device="cpu", dtype="float32")
    return ref, proc, cap


@pytest.fixture(scope="module", params=[("tiny", 0), ("small", 1)], ids=["tiny", "small"])
def models(request):
    return _load(*request.param)


@pytest.mark.parametrize("case", CASES)
def test_token_identical(models, case):
    ref, proc, cap = models
    spec = CASES[case]
    options = parity_options(preset=spec["preset"], **spec["overrides"])
    images = photos()
    prompt_len = len(cap.tokenizer.prompt_ids(options.prompt))
    with torch.no_grad():
        expected = reference_tokens(ref, proc, images, options, prompt_len)
    got = our_tokens(cap, images, options)
    assert got == expected
    # The parity would be blind if every image produced the same caption.
    firsts = [tuple(t) for t in got[:: options.num_captions]]
    assert len(set(firsts)) > 1, "different images must give different captions"


def test_text_matches_processor_decode(models):
    ref, proc, cap = models
    images = photos()[:3]
    options = parity_options(max_new_tokens=15, clean_artifacts=False)
    with torch.no_grad():
        out = ref.generate(**proc(images=images, return_tensors="pt"), max_length=16)
    expected = [proc.decode(row, skip_special_tokens=True) for row in out]
    got = [r.caption for r in cap.caption(images, options=options)]
    assert got == [" ".join(e.split()) for e in expected]


@pytest.mark.parametrize("case", ["coco-beam", "coco-k-captions", "prompt"])
def test_prompted_text_matches_transformers(models, case, request):
    """A prompted caption's text is transformers' decoded sequence with the decoded prompt removed.

    On the tiny checkpoint the coco prompt ("a picture of ") is continued by a
    WordPiece piece (``##...``) for some photos: decoding the generated ids
    alone would show the ``##`` marker.
    """
    ref, proc, cap = models
    spec = {
        "coco-beam": dict(preset="coco"),
        "coco-k-captions": dict(preset="coco", num_beams=4, num_captions=3),
        "prompt": CASES["prompt"]["overrides"],
    }[case]
    options = parity_options(**spec, clean_artifacts=False)
    images = photos()
    prompt_len = len(cap.tokenizer.prompt_ids(options.prompt))
    with torch.no_grad():
        rows = reference_rows(ref, proc, images, options, prompt_len)
    expected = []
    for row in rows:
        full = proc.decode(row, skip_special_tokens=True)
        prompt = proc.decode(row[:prompt_len], skip_special_tokens=True)
        assert full.startswith(prompt)
        expected.append(" ".join(full[len(prompt) :].split()))
    got = [text for r in cap.caption(images, options=options) for text in r.captions]
    assert got == expected
    if request.node.callspec.params["models"] == ("tiny", 0) and case.startswith("coco"):
        pieces = [proc.tokenizer.convert_ids_to_tokens(row[prompt_len]) for row in rows]
        assert any(p.startswith("##") for p in pieces), "the case needs a continuation piece"


def test_confidence_is_the_log_softmax_of_transformers_scores(models):
    """Greedy: each token's log-probability is log_softmax of ``generate``'s scores for it."""
    ref, proc, cap = models
    images = photos()
    options = parity_options(max_new_tokens=20)
    with torch.no_grad():
        out = ref.generate(
            **proc(images=images, return_tensors="pt"), max_length=21, do_sample=False,
            output_scores=True, return_dict_in_generate=True,
        )  # fmt: skip
    sep = ref.config.text_config.sep_token_id
    got = our_tokens(cap, images, options)
    for i, ours in enumerate(got):
        expected = []
        for step, scores in enumerate(out.scores):
            token = int(out.sequences[i, step + 1])
            expected.append(float(torch.log_softmax(scores[i].float(), -1)[token]))
            if token == sep:
                break
        assert list(ours) == out.sequences[i, 1 : 1 + len(ours)].tolist()
        assert ours.ended == (len(expected) == len(ours) + 1)
        np.testing.assert_allclose(ours.logprobs, expected, atol=1e-4, rtol=0)
    # And through the captioner into the record: the mean and minimum of those values.
    first = cap.caption(images[:1], options=options)[0]
    assert first.confidence.mean_logprob == pytest.approx(np.mean(got[0].logprobs), abs=1e-6)
    assert first.confidence.min_logprob == pytest.approx(min(got[0].logprobs), abs=1e-6)


def test_preprocessing_equals_blip_image_processor(models):
    _, proc, cap = models
    rng = np.random.default_rng(0)
    images = photos() + [Image.fromarray(rng.integers(0, 256, (17, 931, 3), dtype=np.uint8))]
    expected = proc.image_processor(images=images, return_tensors="np")["pixel_values"]
    got = np.stack([cap.preprocess(im) for im in images])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_pytorch_model_bin_loads_the_same(models):
    path = checkpoint("tiny", seed=0, safetensors=False)
    bin_cap = Captioner(str(path), backend="torch", device="cpu")
    st_cap = Captioner(str(checkpoint("tiny", seed=0)), backend="torch", device="cpu")
    images = photos()[:2]
    assert [r.caption for r in bin_cap.caption(images)] == [
        r.caption for r in st_cap.caption(images)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["base", "large"])
def test_published_shapes(shape):
    """The full BLIP-base and BLIP-large shapes: greedy and the coco preset, token-identical."""
    ref, proc, cap = _load(shape, seed=3)
    images = photos()[:2]
    for options in (
        parity_options(max_new_tokens=8),
        parity_options(preset="coco", max_length=10),
    ):
        prompt_len = len(cap.tokenizer.prompt_ids(options.prompt))
        with torch.no_grad():
            expected = reference_tokens(ref, proc, images, options, prompt_len)
        got = our_tokens(cap, images, options)
        assert got == expected
    # The image must reach the logits (else parity would be blind to preprocessing).
    pixels = np.stack([cap.preprocess(im) for im in images])
    session = cap.backend.start(pixels, 1, 4)
    logits = session.step(cap.backend.ops.tensor([[cap.tokenizer.bos_token_id]] * 2)).numpy()
    assert np.abs(logits[0] - logits[1]).max() > 1e-2
    if shape == "large":
        assert got[0] != got[1]
