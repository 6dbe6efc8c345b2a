"""Captioner: load a model once, then turn images into captions in input order.

The work runs through :mod:`blipcap.engine`'s one loop and its named stages:
inputs are decoded (and preprocessed) by worker threads a window ahead of the
model, grouped into batches, encoded and decoded by the backend, and finished
into one :class:`~blipcap.results.Caption` per input, in input order. A bad
input becomes an item error and the batch carries on. On CUDA the backend's
overlapped pipeline supplies the stages (copies and the vision encoder of the
next batch run while this one decodes); the loop and the records are the same.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from . import engine
from .batching import BatchSizer, auto_batch_size, check_fits
from .decoding import SpecialTokens, generate
from .errors import BackendError, InputError, OptionsError
from .hub import ModelFiles, resolve_model
from .images import DEFAULT_LIMITS, ImageLimits, load_source
from .inputs import Prepared, is_url, source_label
from .model.config import BlipConfig
from .model.processing import ImagePreprocessor, Tokenizer
from .options import CaptionOptions, resolve_options
from .results import Caption, Confidence, ItemError, Provenance
from .version import __version__

BACKENDS = ("auto", "torch", "onnx")

__all__ = ["BACKENDS", "Captioner", "get_captioner", "is_url"]


class Captioner:
    """A loaded BLIP captioning model.

    ``model``: hub id, local Hugging Face directory or exported ONNX directory
    (default ``$BLIPCAP_MODEL`` or ``Salesforce/blip-image-captioning-large``).
    ``backend``: ``"auto"`` (ONNX for an exported directory, else torch),
    ``"torch"`` or ``"onnx"``. ``device``: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    ``dtype``: ``"auto"``, ``"float32"``, ``"float16"`` or ``"bfloat16"``.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        backend: str = "auto",
        device: str = "auto",
        dtype: str = "auto",
        *,
        revision: str | None = None,
        limits: ImageLimits = DEFAULT_LIMITS,
        decode_workers: int | None = None,
    ):
        if backend not in BACKENDS:
            raise OptionsError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.files: ModelFiles = resolve_model(model, revision=revision)
        if backend == "auto":
            backend = "onnx" if self.files.kind == "onnx" else "torch"
        self.config = BlipConfig.from_dict(self.files.config or {}, self.files.path / "config.json")
        self.backend = _create_backend(backend, self.files, self.config, device, dtype)
        self.preprocess = ImagePreprocessor.from_dir(self.files.path, self.config.vision.image_size)
        t = self.config.text
        self.tokenizer = Tokenizer(self.files.path, t.bos_token_id, t.sep_token_id, t.pad_token_id)
        self.special = SpecialTokens(eos=t.sep_token_id, pad=t.pad_token_id)
        self.limits = limits
        self.decode_workers = decode_workers or min(8, max(2, os.cpu_count() or 2))
        self._pixel_stages: Any = None

    # -- what the model is -------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self.files.model_id

    @property
    def random_weights(self) -> bool:
        """True for random-weight test checkpoints (their output is meaningless)."""
        return self.config.random_weights

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def dtype(self) -> str:
        return self.backend.dtype_name

    def provenance_for(self, options: CaptionOptions) -> Provenance:
        return Provenance(
            model=self.files.model_id,
            revision=self.files.revision,
            backend=self.backend.name,
            dtype=self.backend.dtype_name,
            device=self.backend.device,
            options=options.to_dict(),
            blipcap_version=__version__,
            random_weights=self.random_weights,
        )

    # -- captioning ---------------------------------------------------------------------

    def caption(
        self,
        images: Iterable[Any],
        preset: str | None = None,
        options: CaptionOptions | None = None,
        batch_size: int | str = "auto",
        progress: bool = False,
        **overrides: Any,
    ) -> list[Caption]:
        """Caption ``images`` (paths, URLs, bytes, PIL images); one result per input, in order."""
        return list(self.caption_iter(images, preset, options, batch_size, progress, **overrides))

    def caption_iter(
        self,
        images: Iterable[Any],
        preset: str | None = None,
        options: CaptionOptions | None = None,
        batch_size: int | str = "auto",
        progress: bool = False,
        *,
        pipeline: Any = None,
        **overrides: Any,
    ) -> Iterator[Caption]:
        """Like :meth:`caption`, but lazy: results are yielded as their batch finishes.

        ``pipeline``: :class:`~blipcap.backends.cuda_pipeline.PipelineOptions`
        for the overlapped pipeline (the default on CUDA; on a CPU it runs the
        same steps synchronously).
        """
        opts = resolve_options(options, preset, **overrides)
        check_fits(self, opts)  # what the model and memory cannot take is refused up front
        stages = self.stages_for(pipeline)
        provenance = self.provenance_for(opts)
        extra = getattr(stages, "recorded_options", {})
        if extra:
            provenance = replace(provenance, options={**provenance.options, **extra})
        # Lowered for the rest of the run after an out-of-memory error.
        sizer = BatchSizer(self.batch_size_for(opts, batch_size))
        bar = _progress_bar(images, progress)
        try:
            yield from engine.run(
                stages,
                images,
                opts,
                sizer=sizer,
                finisher=engine.Finisher(self.decoded_result),
                provenance=provenance,
                bar=bar,
            )
        finally:
            if bar is not None:
                bar.close()

    def stages_for(self, pipeline: Any = None) -> engine.Stages:
        """The stages the engine runs: the backend's overlapped pipeline on CUDA, else plain."""
        if pipeline is None and not self.backend.capabilities.overlap:
            return _PlainStages(self)
        from .backends.cuda_pipeline import Pipeline, PipelineOptions

        return Pipeline(
            self.backend,
            self.preprocess,
            lambda backend, pixels, opts: self.generate_tokens(pixels, opts, backend=backend),
            limits=self.limits,
            workers=self.decode_workers,
            options=pipeline or PipelineOptions(),
        )

    def batch_size_for(self, options: CaptionOptions, batch_size: int | str) -> int:
        if batch_size == "auto":
            # The largest batch whose predicted memory fits 85% of free memory (batching.py).
            return auto_batch_size(self, options)
        try:
            size = int(batch_size)
        except (TypeError, ValueError):
            size = 0
        if size < 1:
            raise OptionsError(
                f"batch_size must be 'auto' or a positive integer, got {batch_size!r}"
            )
        return size

    def generate_tokens(
        self, pixels: Any, options: CaptionOptions, *, backend: Any = None
    ) -> list[list[list[int]]]:
        """Encode and decode one batch: token ids per image per caption.

        ``backend``: a decoding backend in place of this model's (e.g. one over
        images encoded ahead, :class:`~blipcap.backends.base.Preencoded`).
        """
        prompt = self.tokenizer.prompt_ids(options.prompt)
        return generate(
            backend or self.backend, pixels, prompt, options, self.special,
            check=self.guard_check(options),
        )  # fmt: skip

    def guard_check(self, options: CaptionOptions):
        """The degeneration guard's test of one caption's tokens (None when the guard is off)."""
        if not options.guard:
            return None
        from .guard import detect

        raw = options.replace(clean_artifacts=False)  # judge what the model wrote
        return lambda tokens: detect(self.caption_text(tokens, raw), prompted=bool(options.prompt))

    def decoded_result(self, label, decoded: list, opts: CaptionOptions, provenance) -> Caption:
        """One input's :class:`Caption` from its token lists: texts, confidences, guard report."""
        captions = [self.caption_text(t, opts) for t in decoded]
        return Caption(
            path=label, caption=captions[0], captions=captions, provenance=provenance,
            confidences=[Confidence.from_logprobs(getattr(t, "logprobs", ())) for t in decoded],
            guard=getattr(decoded[0], "guard", None),
        )  # fmt: skip

    def caption_pixels(self, pixels: np.ndarray, options: CaptionOptions) -> list[Caption]:
        """A :class:`Caption` per image (no path, no provenance) for (N, H, W, 3) uint8 images
        already at the model's size: captions, confidences and the guard's report.

        What a caller that decoded and resized elsewhere (the Ray job's read
        stage) hands over: a quarter of the bytes of normalized pixels. A torch
        backend normalizes them on its device; others get them normalized here,
        by the same arithmetic.
        """
        if self.backend.capabilities.device_normalize:
            if self._pixel_stages is None:
                from .backends.cuda_pipeline import PipelineOptions

                self._pixel_stages = self.stages_for(PipelineOptions(overlap=False))
            stages = self._pixel_stages
            torch = self.backend.torch
            on_device = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.backend.device)
            tokens = stages.decode(stages.encode_pixels(on_device.permute(0, 3, 1, 2)), options)
        else:
            tokens = self.generate_tokens(
                self.preprocess.normalize(pixels.transpose(0, 3, 1, 2)), options
            )
        return [self.decoded_result(None, per_image, options, None) for per_image in tokens]

    def caption_text(self, tokens: list[int], opts: CaptionOptions) -> str:
        """Generated token ids -> caption text (prompt kept if asked, known artifacts removed).

        Every backend's tokens become text here. A prompted caption is the
        decoded prompt and continuation with the prompt's text removed, so a
        continuation that starts inside the prompt's last word reads as it does
        in the whole sequence.
        """
        prompt = self.tokenizer.prompt_ids(opts.prompt)[1:] if opts.prompt else []
        if not prompt:
            text = self.tokenizer.decode(tokens)
        elif opts.strip_prompt:
            text = self.tokenizer.decode_continuation(prompt, tokens)
        else:
            text = self.tokenizer.decode(prompt + tokens)
        if opts.clean_artifacts:
            from .text import clean_caption

            text = clean_caption(text)
        return text

    # -- input decoding -----------------------------------------------------------------

    def load_rgb(self, source: Any) -> Image.Image:
        """Decode one input safely (fetching URLs SSRF-safely) to an upright RGB image.

        Raises :class:`~blipcap.errors.InputError` for anything that is not a usable image.
        """
        return load_source(source, self.limits)

    def load(self, source: Any) -> np.ndarray:
        """Decode one input safely and preprocess it to model pixels (raises InputError)."""
        return self.preprocess(self.load_rgb(source))


class _PlainStages:
    """The engine's stages without overlap: CPU workers preprocess, the backend encodes in
    :func:`~blipcap.decoding.generate` (through :meth:`Captioner.generate_tokens`)."""

    name = "blipcap-decode"
    overlap = False

    def __init__(self, captioner: Captioner):
        self.captioner = captioner
        self.workers = captioner.decode_workers

    def prepare(self, source: Any) -> Prepared:
        label = source_label(source)
        try:
            return Prepared(label, pixels=self.captioner.load(source))
        except (InputError, OSError, ValueError) as exc:  # anything about reading this input
            return Prepared(label, error=ItemError.from_exception(exc))

    def encode(self, items) -> np.ndarray:
        return np.stack([p.pixels for p in items])

    def decode(self, encoded: np.ndarray, options: CaptionOptions) -> list[list[list[int]]]:
        return self.captioner.generate_tokens(encoded, options)


def _create_backend(name: str, files: ModelFiles, config: BlipConfig, device: str, dtype: str):
    if name == "torch":
        if files.kind == "onnx":
            raise BackendError(
                f"{files.path} is an exported ONNX directory; use --backend onnx (or auto), "
                "or point --model at the Hugging Face checkpoint for the torch backend"
            )
        from .backends.torch import TorchBackend

        return TorchBackend(files.path, config, device=device, dtype=dtype)
    from .backends.onnx import OnnxBackend

    return OnnxBackend.from_files(files, config, device=device, dtype=dtype)


def _progress_bar(images: Iterable[Any], enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    total = len(images) if hasattr(images, "__len__") else None  # type: ignore[arg-type]
    return tqdm(total=total, unit="img", desc="captioning", dynamic_ncols=True)


_SHARED: dict[tuple, Captioner] = {}
_SHARED_LOCK = threading.Lock()


def get_captioner(
    model: str | os.PathLike[str] | None = None,
    backend: str = "auto",
    device: str = "auto",
    dtype: str = "auto",
) -> Captioner:
    """The one Captioner of this process for these settings (CLI, server and indexer share it)."""
    key = (os.fspath(model) if model is not None else None, backend, device, dtype)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = Captioner(model, backend=backend, device=device, dtype=dtype)
        return _SHARED[key]
