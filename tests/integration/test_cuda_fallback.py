"""The CUDA fast path's code runs (or falls back cleanly) on a machine without CUDA.

The static-shape step (full-length attention under a position mask, explicit
position tensor, persistent buffers) must give the same tokens as the
default path; graph capture falls back to the eager static step without
CUDA; the torch.compile variant traces as one graph; the overlapped pipeline
returns exactly the records of ``Captioner.caption``.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.helpers import image_bytes

torch = pytest.importorskip("torch")

from blipcap import Captioner  # noqa: E402
from blipcap.backends.base import Capabilities  # noqa: E402
from blipcap.backends.cuda import (  # noqa: E402
    FastPath,
    FastPathOptions,
    StaticBuffers,
    fast_path_enabled,
    static_step,
)
from blipcap.backends.cuda_pipeline import (  # noqa: E402
    Pipeline,
    PipelineOptions,
    caption_stream,
    gpu_resize,
    plain_jpeg,
)
from blipcap.errors import BackendError, OptionsError  # noqa: E402
from blipcap.images import DEFAULT_LIMITS, ImageLimits, expand_inputs  # noqa: E402


def jpeg(seed: int, size=(70, 90), mode="RGB") -> bytes:
    return image_bytes(seed, "JPEG", size, mode, quality=90)


IMAGES = [jpeg(i, size=(60 + 7 * i, 50 + 5 * i)) for i in range(7)]


@pytest.fixture(scope="module")
def small(small_checkpoint):
    return Captioner(str(small_checkpoint), backend="torch", device="cpu")


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return Captioner(str(tiny_checkpoint), backend="torch", device="cpu")


def records(results):
    """Records without the confidence: the static step's float32 sums differ in the last bits,
    which can move a rounded log-probability (tokens, which those records pin, cannot move)."""
    out = []
    for r in results:
        rec = r.to_record()
        confidences = [rec.pop("confidence")] + rec.pop("confidences", [])[1:]
        assert all(c is None or 0 < c["score"] <= 1 for c in confidences)
        out.append(rec)
    return out


def mean_logprobs(results):
    return [c.mean_logprob for r in results for c in r.confidences]


def with_fast(cap, options: FastPathOptions | None = None):
    cap.backend.fast_path = FastPath(cap.backend, options)
    return cap.backend.fast_path


CASES = {
    "greedy": dict(max_new_tokens=12),
    "coco": dict(preset="coco"),
    "beams-k": dict(num_beams=4, num_captions=3, max_new_tokens=8),
    "prompt": dict(prompt="a photo of", max_new_tokens=6),
    "penalties": dict(
        repetition_penalty=1.5, no_repeat_ngram_size=2, min_new_tokens=5, max_new_tokens=8
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_static_step_gives_the_default_paths_tokens(small, case):
    kw = dict(CASES[case])
    preset = kw.pop("preset", None)
    small.backend.fast_path = None
    default_path = small.caption(IMAGES, preset=preset, batch_size=8, **kw)
    fast = with_fast(small)
    try:
        # batch 3 then 3 then 1: the later batches reuse (slices of) the first batch's buffers,
        # whose masked positions held the previous batch's keys.
        static = small.caption(IMAGES, preset=preset, batch_size=3, **kw)
    finally:
        small.backend.fast_path = None
    assert records(static) == records(default_path)
    assert mean_logprobs(static) == pytest.approx(mean_logprobs(default_path), abs=1e-4)
    assert fast.step_mode == "eager" and fast.captured_graphs == 0


def test_static_step_logits_match_the_default_decoder(small):
    """Step by step, prompt included: the masked full-length attention equals the growing prefix."""
    backend = small.backend
    pixels = np.stack([small.load(b) for b in IMAGES[:2]])
    ids = torch.tensor([[30522, 1037, 6302, 1997]] * 2)  # [DEC] a photo of
    default = backend.start(pixels, 1, 12)
    fast = FastPath(backend, FastPathOptions(step="graphs"))
    static = fast.start(pixels, 1, 12)
    a, b = default.step(ids), static.step(ids)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for _ in range(5):
        nxt = a.argmax(-1, keepdim=True)
        a, b = default.step(nxt), static.step(nxt)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert static.length == 9
    with pytest.raises(ValueError, match="static length 12"):
        static.step(torch.zeros(2, 4, dtype=torch.int64))


def test_static_step_masks_positions_after_the_current_one(small):
    """Garbage in the cache beyond the current position must not change the logits."""
    backend = small.backend
    decoder = backend.model.text_decoder
    fast = FastPath(backend)
    pixels = np.stack([small.load(IMAGES[0])])
    session = fast.start(pixels, 1, 10)
    buf = session.buf
    ids = torch.tensor([[30522, 1037]])
    cross = [(k[:1], v[:1]) for k, v in buf.cross]
    with torch.no_grad():
        buf.position.fill_(0)
        clean = static_step(decoder, ids, buf.position, buf.cache[:, :, :1], cross, 1, buf.arange)
        buf.cache[:, :, :, :, 2:] = 1e4  # keys/values at positions 2.. are "stale"
        dirty = static_step(decoder, ids, buf.position, buf.cache[:, :, :1], cross, 1, buf.arange)
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)


def test_buffers_are_shared_across_batch_sizes_and_grow(tiny):
    fast = FastPath(tiny.backend)
    first = fast.buffers_for(4, 3, 20)
    assert fast.buffers_for(2, 3, 20) is first  # smaller batch: slices of the same storage
    assert fast.buffers_for(4, 1, 20) is not first  # other rows per image: its own buffers
    bigger = fast.buffers_for(6, 3, 20)
    assert bigger is not first and bigger.capacity == 6
    fast.buffers_for(2, 1, 31)  # a third (rows, length): the least recently used set goes
    assert sorted(fast._buffers) == [(1, 31), (3, 20)]
    c = tiny.config
    per_row = c.text.num_hidden_layers * 2 * c.text.hidden_size * 20 * 4
    cross = c.text.num_hidden_layers * 2 * c.vision.seq_len * c.text.hidden_size * 4
    assert bigger.nbytes() == 18 * per_row + 6 * cross + 18 * 8
    assert isinstance(bigger, StaticBuffers)


def test_graph_mode_without_cuda_falls_back_to_eager(tiny):
    fast = FastPath(tiny.backend, FastPathOptions(step="graphs"))
    assert fast.cuda is False and fast.step_mode == "eager"
    # compile is honoured on a CPU too (inductor or any other torch.compile backend)
    assert FastPath(tiny.backend, FastPathOptions(step="compile")).step_mode == "compile"


@pytest.mark.slow
def test_compiled_step_traces_as_one_graph(tiny):
    """fullgraph=True: a graph break (which would defeat reduce-overhead's CUDA graphs) fails here."""
    torch._dynamo.reset()
    tiny.backend.fast_path = None
    want = records(tiny.caption(IMAGES[:4], num_beams=2, max_new_tokens=6))
    fast = with_fast(tiny, FastPathOptions(step="compile", compile_backend="eager"))
    try:
        got = records(tiny.caption(IMAGES[:4], num_beams=2, max_new_tokens=6, batch_size=4))
    finally:
        tiny.backend.fast_path = None
        torch._dynamo.reset()
    assert got == want
    assert fast._compiled is not None


def test_options_and_switches(monkeypatch):
    monkeypatch.setenv("BLIPCAP_DECODE_STEP", "compile")
    assert FastPathOptions.from_env().step == "compile"
    monkeypatch.setenv("BLIPCAP_DECODE_STEP", "warp")
    with pytest.raises(
        OptionsError, match="unknown decode step mode 'warp'; choose one of graphs, compile, eager"
    ):
        FastPathOptions.from_env()
    assert (
        fast_path_enabled("cuda") and fast_path_enabled("cuda:1") and not fast_path_enabled("cpu")
    )
    monkeypatch.setenv("BLIPCAP_FAST_PATH", "0")
    assert not fast_path_enabled("cuda")


def test_cpu_backend_keeps_the_default_path(tiny):
    assert tiny.backend.fast_path is None


def test_cuda_without_a_gpu_is_a_clear_error(tiny_checkpoint):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BackendError, match="PyTorch sees no CUDA GPU; use --device cpu"):
        Captioner(str(tiny_checkpoint), backend="torch", device="cuda")


# -- the overlapped pipeline ---------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_pipeline_returns_the_captioners_records(tiny, tmp_path, batch_size):
    (tmp_path / "a.jpg").write_bytes(IMAGES[0])
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff truncated")
    Image.open(io.BytesIO(IMAGES[1])).convert("L").save(tmp_path / "c.png")
    items = list(expand_inputs([str(tmp_path)])) + IMAGES[2:5] + [b"not an image"]
    want = records(tiny.caption(items, max_new_tokens=8, batch_size=4))
    got = records(caption_stream(tiny, items, max_new_tokens=8, batch_size=batch_size))
    assert got == want
    assert [r["path"] for r in got][:3] == [str(tmp_path / n) for n in ("a.jpg", "b.jpg", "c.png")]
    assert got[1]["error"]["type"] == "CorruptImageError" and got[1]["caption"] is None
    assert got[-1]["error"]["type"] == "UnsupportedFormatError"
    assert all(r["random_weights"] for r in got)


def test_pipeline_beam_search_and_all_broken_batches(tiny):
    items = [b"x", b"y", *IMAGES[:3]]
    want = records(tiny.caption(items, preset="coco", batch_size=2))
    got = records(caption_stream(tiny, items, preset="coco", batch_size=2))
    assert got == want
    assert [r["error"] is None for r in got] == [False, False, True, True, True]


def test_gpu_normalization_is_bit_identical_to_the_cpu_preprocessor(tiny):
    pre = tiny.preprocess
    for data in IMAGES[:3] + [jpeg(9, mode="L")]:
        image = Image.open(io.BytesIO(data))
        u8 = torch.from_numpy(pre.to_uint8(image).copy()).permute(2, 0, 1)[None]
        got = pre.normalize_tensor(torch, u8)[0].numpy()
        want = pre(image)
        assert got.dtype == want.dtype == np.float32
        assert np.array_equal(got, want)


def test_gpu_decode_needs_cuda(tiny):
    with pytest.raises(BackendError, match="gpu_decode needs a CUDA device"):
        tiny.stages_for(PipelineOptions(gpu_decode=True))


def test_pipeline_refuses_other_backends(tiny):
    onnx_like = type("B", (), {"name": "onnx", "capabilities": Capabilities()})()
    with pytest.raises(BackendError, match="runs on the torch backend"):
        Pipeline(onnx_like, tiny.preprocess, tiny.generate_tokens)


def test_which_jpegs_go_to_nvjpeg():
    assert plain_jpeg(IMAGES[0], DEFAULT_LIMITS)
    assert plain_jpeg(jpeg(1, mode="L"), DEFAULT_LIMITS)
    assert not plain_jpeg(jpeg(1, mode="CMYK"), DEFAULT_LIMITS)  # nvJPEG's CMYK support varies
    assert not plain_jpeg(jpeg(1, size=(200, 100)), ImageLimits(max_pixels=10_000))
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    assert not plain_jpeg(png.getvalue(), DEFAULT_LIMITS)
    assert not plain_jpeg(b"\xff\xd8\xff\xe0garbage", DEFAULT_LIMITS)


def test_gpu_resize_differs_from_pillow_by_at_most_a_few_levels():
    """The measured difference that keeps GPU decoding opt-in (docs/gpu.md)."""
    skdata = pytest.importorskip("skimage.data")
    worst, shares = 0, []
    for photo in (skdata.astronaut(), skdata.coffee(), skdata.chelsea()):
        want = np.asarray(
            Image.fromarray(photo).resize((384, 384), Image.Resampling.BICUBIC)
        ).astype(int)
        x = torch.from_numpy(photo).permute(2, 0, 1).contiguous()
        got = gpu_resize(torch, x, 384, 384).permute(1, 2, 0).numpy().astype(int)
        diff = np.abs(got - want)
        worst = max(worst, int(diff.max()))
        shares.append(float((diff > 0).mean()))
    assert 0 < worst <= 8
    assert 0.1 < max(shares) < 0.25  # about one value in six is off, almost all by one level


def test_pipeline_out_of_memory_halves_the_batch_and_keeps_every_item(tiny, monkeypatch):
    want = records(tiny.caption(IMAGES, max_new_tokens=6, batch_size=8))
    real, sizes = Pipeline.decode, []

    def tight(self, encoded, opts):
        sizes.append(encoded[0].shape[0])
        if encoded[0].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, encoded, opts)

    monkeypatch.setattr(Pipeline, "decode", tight)
    got = records(caption_stream(tiny, IMAGES, max_new_tokens=6, batch_size=4))
    assert got == want
    # 4 fails -> 2 + 2; the next batch (3, formed before the failure) -> 2 + 1
    assert sizes == [4, 2, 2, 3, 2, 1]


def test_an_image_that_does_not_fit_alone_is_an_item_error(tiny, monkeypatch):
    def never(self, encoded, opts):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(Pipeline, "decode", never)
    got = records(
        caption_stream(tiny, [IMAGES[0], b"junk", IMAGES[1]], max_new_tokens=6, batch_size=4)
    )
    assert [r["error"]["type"] for r in got] == [
        "OutOfMemoryError",
        "UnsupportedFormatError",
        "OutOfMemoryError",
    ]
    assert "out of memory even for this image alone" in got[0]["error"]["message"]


def test_auto_batch_size_comes_from_the_memory_planner(tiny, monkeypatch):
    import blipcap.captioner as captioner_module

    seen = []
    monkeypatch.setattr(
        captioner_module,
        "auto_batch_size",
        lambda cap, opts: seen.append(opts.max_new_tokens) or 2,
    )
    got = records(caption_stream(tiny, IMAGES[:3], max_new_tokens=5))
    assert seen == [5] and len(got) == 3 and all(r["error"] is None for r in got)
