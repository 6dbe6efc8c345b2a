"""Captioner: load a model once, then turn images into captions in input order.

The pipeline per call: inputs are decoded (and preprocessed) by a pool of
worker threads a window ahead of the model, so the model never waits on JPEG
decoding; decoded images are grouped into batches; each batch runs through
the backend-neutral decoding; results come back in input order, one
:class:`~blipcap.results.Caption` per input. A bad input becomes an item
error and the batch carries on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .batching import BatchSizer, auto_batch_size, check_fits, run_with_backoff
from .decoding import SpecialTokens, generate
from .errors import BackendError, InputError, OptionsError, OutOfMemoryError
from .hub import ModelFiles, resolve_model
from .images import DEFAULT_LIMITS, ImageInput, ImageLimits, decode_ahead, load_image, load_input
from .model.config import BlipConfig
from .model.processing import ImagePreprocessor, Tokenizer
from .options import CaptionOptions, resolve_options
from .results import Caption, Confidence, ItemError, Provenance
from .version import __version__

BACKENDS = ("auto", "torch", "onnx")


@dataclass(frozen=True)
class _Prepared:
    """One input after decoding: pixels ready for the model, or the reason it failed."""

    label: str | None
    pixels: np.ndarray | None = None
    error: ItemError | None = None


def _label(source: Any) -> str | None:
    if isinstance(source, ImageInput):
        return source.label
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "filename", None) or getattr(source, "name", None)
    return str(name) if name else None


def is_url(source: Any) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


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
        **overrides: Any,
    ) -> Iterator[Caption]:
        """Like :meth:`caption`, but lazy: results are yielded as their batch finishes."""
        opts = resolve_options(options, preset, **overrides)
        check_fits(self, opts)  # what the model and memory cannot take is refused up front
        if getattr(self.backend, "fast_path", None) is not None:
            # CUDA: the overlapped pipeline (pinned copies, encoder of the next batch
            # running while this one decodes) gives the same records in the same order.
            from .backends.cuda_pipeline import caption_stream

            yield from caption_stream(
                self, images, options=opts, batch_size=batch_size, progress=progress
            )
            return
        size = self.batch_size_for(opts, batch_size)
        sizer = BatchSizer(size)  # lowered for the rest of the run after an out-of-memory error
        provenance = self.provenance_for(opts)
        bar = _progress_bar(images, progress)
        try:
            batch: list[_Prepared] = []
            for prepared in self._prepare(images, window=max(2 * size, 2 * self.decode_workers)):
                batch.append(prepared)
                if len(batch) >= sizer.size:
                    yield from self._run_batch(batch, opts, provenance, bar, sizer)
                    batch = []
            if batch:
                yield from self._run_batch(batch, opts, provenance, bar, sizer)
        finally:
            if bar is not None:
                bar.close()

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

    def generate_tokens(self, pixels: np.ndarray, options: CaptionOptions) -> list[list[list[int]]]:
        """Model step for one batch of preprocessed images: token ids per image per caption."""
        return generate(
            self.backend, pixels, self.tokenizer.prompt_ids(options.prompt), options, self.special,
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

    def _run_batch(
        self, batch: list[_Prepared], opts, provenance, bar, sizer: BatchSizer | None = None
    ) -> Iterator[Caption]:
        good = [p for p in batch if p.pixels is not None]
        # Out of memory: halve and retry down to 1 image; an image that fails alone gets an error.
        outputs = run_with_backoff(
            lambda part: self.generate_tokens(np.stack([p.pixels for p in part]), opts),
            good,
            on_shrink=sizer.shrink if sizer is not None else None,
        )
        it = iter(outputs)
        for p in batch:
            if p.pixels is None:
                result = Caption(path=p.label, caption=None, error=p.error, provenance=provenance)
            elif isinstance(out := next(it), OutOfMemoryError):
                result = Caption(
                    path=p.label, caption=None, error=ItemError.from_exception(out),
                    provenance=provenance,
                )  # fmt: skip
            else:
                result = self.decoded_result(p.label, out, opts, provenance)
            if bar is not None:
                bar.update(1)
            yield result

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
        if isinstance(source, ImageInput):
            return load_input(source, self.limits)
        if is_url(source):
            from .fetch import fetch_url

            data = fetch_url(source, max_bytes=self.limits.max_bytes).data
            return load_image(data, self.limits, name=source)
        return load_image(source, self.limits)

    def load(self, source: Any) -> np.ndarray:
        """Decode one input safely and preprocess it to model pixels (raises InputError)."""
        return self.preprocess(self.load_rgb(source))

    def _prepare_one(self, source: Any) -> _Prepared:
        label = _label(source)
        try:
            return _Prepared(label, pixels=self.load(source))
        except InputError as exc:
            return _Prepared(label, error=ItemError.from_exception(exc))
        except (OSError, ValueError) as exc:  # anything else about reading this one input
            return _Prepared(label, error=ItemError.from_exception(exc))

    def _prepare(self, images: Iterable[Any], window: int) -> Iterator[_Prepared]:
        """Decode in worker threads, a bounded window ahead, yielding in input order."""
        return decode_ahead(
            self._prepare_one,
            images,
            workers=self.decode_workers,
            window=window,
            name="blipcap-decode",
        )


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
