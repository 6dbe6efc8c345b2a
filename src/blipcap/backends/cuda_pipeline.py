"""An overlapped GPU pipeline: image bytes in, captions out, so the GPU never waits.

:func:`caption_stream` is :meth:`Captioner.caption_iter <blipcap.captioner.Captioner.caption_iter>`
rebuilt for throughput on one GPU; results are the same records in the same
order. What it adds over the per-batch path:

* CPU workers decode and resize each image to the model's size as 8-bit RGB
  (Pillow, exactly the resize of the default path); the 4x smaller uint8
  batch is staged in a reused *pinned* host buffer, copied to the GPU with a
  ``non_blocking`` copy on a copy stream, and rescaled/normalized there with
  the same float64-then-float32 arithmetic as the CPU path (bit-identical).
* The vision encoder of batch N+1 runs on its own CUDA stream while batch N
  decodes on the main stream: the encoder is compute-bound, the graph-captured
  decoder memory- and launch-bound, so they overlap on one GPU.
* Optional nvJPEG decoding on the GPU (``gpu_decode=True``, needs
  torchvision): decode + resize happen on the device. Its bicubic resize is
  not Pillow's (see docs/gpu.md for the measured difference), so it is off by
  default and results record ``image_decode: "gpu"`` in their options.

Without CUDA every step runs synchronously on the CPU (no streams, no pinned
memory) through the same code, which is how it is tested.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..batching import _release_cached_memory, auto_batch_size, is_out_of_memory, run_with_backoff
from ..decoding import generate
from ..errors import BackendError, InputError, OptionsError
from ..images import ImageInput, _read_source, decode_ahead, load_image
from ..options import CaptionOptions, resolve_options
from ..results import Caption, ItemError

DEFAULT_BATCH = 256  # measured.md: throughput of one H100 levels off around 256 images
OUT_OF_MEMORY = object()  # marks a batch whose encoder ran out of memory


@dataclass(frozen=True)
class PipelineOptions:
    batch_size: int = DEFAULT_BATCH
    """Images per batch (:func:`caption_stream` resolves "auto" with :mod:`blipcap.batching`)."""
    overlap: bool = True
    """Encode batch N+1 on a side CUDA stream while batch N decodes (CUDA only)."""
    gpu_decode: bool = False
    """nvJPEG via torchvision.io.decode_jpeg on the GPU (opt-in: its resize differs from Pillow's)."""
    decode_workers: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise OptionsError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class _Item:
    """One input after the CPU stage: resized uint8 pixels, JPEG bytes for the GPU, or an error."""

    label: str | None
    pixels: np.ndarray | None = None  # (H, W, 3) uint8
    jpeg: bytes | None = None
    error: ItemError | None = None


def resize_uint8(image: Image.Image, preprocess) -> np.ndarray:
    """The first half of ``ImagePreprocessor``: RGB, resized with its filter, as (H, W, 3) uint8."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    h, w = preprocess.size
    return np.asarray(image.resize((w, h), resample=preprocess.resample), dtype=np.uint8)


def normalize(torch, pixels, preprocess):
    """(N, 3, H, W) uint8 tensor -> float32, the same arithmetic as ``ImagePreprocessor``.

    Rescale in float64, round to float32, then subtract and divide in float32:
    IEEE operations in the same order give bit-identical values on CPU and GPU.
    """
    device = pixels.device
    mean = torch.as_tensor(preprocess.mean, device=device)  # (3, 1, 1) float32
    std = torch.as_tensor(preprocess.std, device=device)
    x = (pixels.to(torch.float64) * preprocess.rescale_factor).to(torch.float32)
    return (x - mean) / std


def _source_label(source: Any) -> str | None:
    if isinstance(source, ImageInput):
        return source.label
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "filename", None) or getattr(source, "name", None)
    return str(name) if name else None


def _plain_jpeg(data: bytes, limits) -> bool:
    """Whether nvJPEG may take these bytes: a baseline RGB/grey JPEG within the pixel limit.

    Anything else (CMYK, oversized, not a JPEG) goes to the CPU path, whose
    safe loader gives the same error messages as everywhere else.
    """
    if not data.startswith(b"\xff\xd8\xff"):
        return False
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
            w, h = im.size
            return im.mode in ("RGB", "L") and w * h <= limits.max_pixels
    except Exception:  # noqa: BLE001 - any doubt: let the CPU loader decide and report
        return False


class Pipeline:
    """Runs :func:`caption_stream` for one Captioner (torch backend)."""

    def __init__(self, captioner, options: PipelineOptions | None = None):
        from .cuda import FastPath, FastPathOptions

        backend = captioner.backend
        if getattr(backend, "name", None) != "torch":
            raise BackendError(
                "the GPU pipeline runs on the torch backend; use Captioner(..., backend='torch')"
            )
        self.captioner = captioner
        self.options = options or PipelineOptions()
        self.torch = backend.torch
        self.device = backend.device
        self.cuda = self.device.startswith("cuda") and self.torch.cuda.is_available()
        self.fast = backend.fast_path or FastPath(backend, FastPathOptions.from_env())
        if self.options.gpu_decode:
            if not self.cuda:
                raise BackendError(
                    "gpu_decode needs a CUDA device; on this machine images are decoded by CPU workers "
                    "(leave gpu_decode off)"
                )
            try:
                import torchvision.io as tvio
            except ImportError as exc:
                raise BackendError(
                    "gpu_decode needs torchvision (nvJPEG through torchvision.io.decode_jpeg): "
                    "install the torchvision build that matches your torch, e.g. pip install torchvision"
                ) from exc
            self.torchvision_io = tvio
        self.size = self.options.batch_size  # lowered for good after an out-of-memory error
        workers = self.options.decode_workers or captioner.decode_workers
        self.workers = max(1, int(workers))
        self._staging: list[Any] = []
        self._staging_free: list[Any] = []
        if self.cuda:
            self.copy_stream = self.torch.cuda.Stream(device=self.device)
            self.encode_stream = self.torch.cuda.Stream(device=self.device)

    # -- the CPU stage --------------------------------------------------------------------

    def _prepare_one(self, source: Any) -> _Item:
        label = _source_label(source)
        cap = self.captioner
        try:
            if self.options.gpu_decode and isinstance(
                source, (bytes, str, os.PathLike, ImageInput)
            ):
                data = self._raw_bytes(source, label)
                if data is not None and _plain_jpeg(data, cap.limits):
                    return _Item(label, jpeg=data)
                if data is not None:
                    image = load_image(data, cap.limits, name=label or "<bytes>")
                    return _Item(label, pixels=resize_uint8(image, cap.preprocess))
            return _Item(label, pixels=resize_uint8(cap.load_rgb(source), cap.preprocess))
        except (InputError, OSError, ValueError) as exc:
            return _Item(label, error=ItemError.from_exception(exc))

    def _raw_bytes(self, source: Any, label: str | None) -> bytes | None:
        """The file's bytes (size-capped) for local files and bytes; None for anything else."""
        if isinstance(source, ImageInput):
            if source.kind not in ("file", "bytes"):
                return None
            source = source.payload
        if isinstance(source, str) and source.lower().startswith(("http://", "https://")):
            return None
        return _read_source(source, self.captioner.limits, label or "<bytes>")

    def _prepared(self, images: Iterable[Any], window: int) -> Iterator[_Item]:
        return decode_ahead(
            self._prepare_one,
            images,
            workers=self.workers,
            window=window,
            name="blipcap-gpu-decode",
        )

    # -- the device stage -----------------------------------------------------------------

    def _to_device(self, items: list[_Item]):
        """The batch as an (N, 3, H, W) uint8 device tensor (pinned staging + async copy on CUDA)."""
        torch = self.torch
        h, w = self.captioner.preprocess.size
        host = [it.pixels for it in items if it.pixels is not None]
        if not self.cuda:
            return torch.from_numpy(np.stack(host)).permute(0, 3, 1, 2)
        staging, free = self._staging_buffer(len(items), h, w)
        free.synchronize()  # the previous copy out of this buffer has finished
        view = staging[: len(host)].numpy()
        for i, pixels in enumerate(host):
            view[i] = pixels
        with torch.cuda.stream(self.copy_stream):
            dev = staging[: len(host)].to(self.device, non_blocking=True)
            free.record(self.copy_stream)
        dev = dev.permute(0, 3, 1, 2)
        if any(it.jpeg is not None for it in items):
            dev = self._merge_gpu_decoded(items, dev)
        return dev

    def _staging_buffer(self, n: int, h: int, w: int):
        """Two pinned buffers used in turn, so filling one overlaps the copy out of the other."""
        torch = self.torch
        if not self._staging or self._staging[0].shape[0] < n:
            cap = max(n, self.options.batch_size)
            self._staging = [
                torch.empty((cap, h, w, 3), dtype=torch.uint8).pin_memory() for _ in range(2)
            ]
            self._staging_free = [torch.cuda.Event() for _ in range(2)]
            for e in self._staging_free:
                e.record()
        self._staging.append(self._staging.pop(0))
        self._staging_free.append(self._staging_free.pop(0))
        return self._staging[-1], self._staging_free[-1]

    def _merge_gpu_decoded(self, items: list[_Item], cpu_decoded):
        """nvJPEG-decode the JPEG items and interleave them with the CPU-decoded ones, in order."""
        torch = self.torch
        jpegs = [it for it in items if it.jpeg is not None]
        h, w = self.captioner.preprocess.size
        with torch.cuda.stream(self.copy_stream):
            decoded = self.torchvision_io.decode_jpeg(
                [torch.frombuffer(bytearray(it.jpeg), dtype=torch.uint8) for it in jpegs],
                mode=self.torchvision_io.ImageReadMode.RGB,
                device=self.device,
                apply_exif_orientation=True,
            )
            resized = [gpu_resize(torch, x, h, w) for x in decoded]
        torch.cuda.current_stream().wait_stream(self.copy_stream)
        out, gpu_it, cpu_it = [], iter(resized), iter(cpu_decoded)
        for it in items:
            if it.jpeg is not None:
                out.append(next(gpu_it))
            elif it.pixels is not None:
                out.append(next(cpu_it))
        return torch.stack(out)

    def encode(self, pixels_u8):
        """Normalize and run the vision encoder; on CUDA, on the encoder stream. Returns (embeds, ready)."""
        torch = self.torch
        model = self.captioner.backend.model
        if not self.cuda:
            with torch.no_grad():
                x = normalize(torch, pixels_u8, self.captioner.preprocess)
                return model.vision_model(x.to(self.captioner.backend.dtype)), None
        stream = self.encode_stream if self.options.overlap else torch.cuda.current_stream()
        stream.wait_stream(self.copy_stream)
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            x = normalize(torch, pixels_u8, self.captioner.preprocess)
            embeds = model.vision_model(x.to(self.captioner.backend.dtype))
            ready = torch.cuda.Event()
            ready.record(stream)
        pixels_u8.record_stream(stream)
        return embeds, ready

    def decode(self, embeds, ready, opts: CaptionOptions) -> list[list[list[int]]]:
        """Generate token ids for encoded images on the main stream."""
        torch = self.torch
        if ready is not None:
            torch.cuda.current_stream().wait_event(ready)
            embeds.record_stream(torch.cuda.current_stream())
        cap = self.captioner
        backend = _Preencoded(self.fast, embeds)
        placeholder = np.empty((embeds.shape[0], 0), dtype=np.float32)  # generate reads the count
        return generate(
            backend, placeholder, cap.tokenizer.prompt_ids(opts.prompt), opts, cap.special,
            check=cap.guard_check(opts),
        )  # fmt: skip

    # -- the loop -------------------------------------------------------------------------

    def run(self, images: Iterable[Any], opts: CaptionOptions, bar=None) -> Iterator[Caption]:
        provenance = self.captioner.provenance_for(opts)
        if self.options.gpu_decode:
            provenance = _with_option(provenance, image_decode="gpu")
        pending = None  # (items, embeds, ready) encoded, not yet decoded
        batch: list[_Item] = []
        for item in self._prepared(images, window=2 * self.size + 2 * self.workers):
            batch.append(item)
            if len(batch) >= self.size:
                # Enqueue batch N+1's encoder before decoding batch N: on CUDA they overlap.
                encoded = self._start(batch)
                if pending is not None:
                    yield from self._finish(pending, opts, provenance, bar)
                pending, batch = encoded, []
        if batch:
            encoded = self._start(batch)
            if pending is not None:
                yield from self._finish(pending, opts, provenance, bar)
            pending = encoded
        if pending is not None:
            yield from self._finish(pending, opts, provenance, bar)

    def _start(self, items: list[_Item]):
        if not any(it.error is None for it in items):
            return items, None, None
        try:
            embeds, ready = self.encode(self._to_device(items))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            return items, OUT_OF_MEMORY, None  # redone in smaller pieces by _finish
        return items, embeds, ready

    def _tokens(self, items: list[_Item], embeds, ready, opts: CaptionOptions) -> list:
        """Token ids per good item; on out-of-memory, halve and retry (no item lost or reordered).

        An entry is an :class:`~blipcap.errors.OutOfMemoryError` for an image
        that does not fit even alone.
        """
        good = [it for it in items if it.error is None]
        if embeds is not OUT_OF_MEMORY:
            try:
                return self.decode(embeds, ready, opts)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
        del embeds
        _release_cached_memory()

        def run(sub: list[_Item]) -> list:
            e, r = self.encode(self._to_device(sub))
            return self.decode(e, r, opts)

        def shrink(size: int) -> None:
            self.size = max(1, min(self.size, size))

        half = (len(good) + 1) // 2  # the whole batch just failed: start from its halves
        shrink(half)
        return run_with_backoff(run, good[:half], shrink) + run_with_backoff(
            run, good[half:], shrink
        )

    def _finish(self, pending, opts: CaptionOptions, provenance, bar) -> Iterator[Caption]:
        items, embeds, ready = pending
        per_item = iter(())
        if embeds is not None:
            per_item = iter(self._tokens(items, embeds, ready, opts))
        for it in items:
            error, tokens = it.error, None
            if error is None:
                tokens = next(per_item)
                if isinstance(tokens, Exception):
                    error = ItemError.from_exception(tokens)
            if error is not None:
                result = Caption(path=it.label, caption=None, error=error, provenance=provenance)
            else:
                result = self.captioner.decoded_result(it.label, tokens, opts, provenance)
            if bar is not None:
                bar.update(1)
            yield result


class _Preencoded:
    """A DecodingBackend whose ``start`` uses image embeddings computed ahead of time."""

    def __init__(self, fast, embeds):
        self.fast = fast
        self.ops = fast.backend.ops
        self.embeds = embeds

    def start(self, pixel_values, rows_per_image: int, max_len: int):
        return self.fast.start_from_embeds(self.embeds, rows_per_image, max_len)

    def subset(self, images: list[int]) -> _Preencoded:
        """The same backend over some of the images (the degeneration guard re-decodes those)."""
        return _Preencoded(self.fast, self.embeds[images])


def gpu_resize(torch, image_u8, height: int, width: int):
    """(3, h, w) uint8 -> (3, height, width) uint8 with antialiased bicubic (a=-0.5), as Pillow's filter.

    Pillow resamples 8-bit images in fixed point; this runs in float and
    rounds, so a few pixels differ by one level (measured in docs/gpu.md).
    """
    import torch.nn.functional as F

    x = F.interpolate(
        image_u8[None].to(torch.float32),
        size=(height, width),
        mode="bicubic",
        antialias=True,
        align_corners=False,
    )
    return x.round_().clamp_(0, 255).to(torch.uint8)[0]


def _with_option(provenance, **extra):
    from dataclasses import replace

    return replace(provenance, options={**provenance.options, **extra})


def caption_stream(
    captioner,
    images: Iterable[Any],
    preset: str | None = None,
    options: CaptionOptions | None = None,
    batch_size: int | str = "auto",
    *,
    overlap: bool = True,
    gpu_decode: bool = False,
    progress: bool = False,
    **overrides: Any,
) -> Iterator[Caption]:
    """Caption ``images`` through the overlapped pipeline; one :class:`Caption` per input, in order.

    Same inputs, options and records as ``Captioner.caption_iter``; on a CPU it
    runs the same steps synchronously. ``batch_size="auto"`` sizes batches to
    free memory (up to 256 on a GPU); out of memory anyway, a batch is halved
    and retried, down to one image, and later batches keep the smaller size.
    """
    opts = resolve_options(options, preset, **overrides)
    if batch_size == "auto":  # sized to memory, up to 256 on a GPU (blipcap.batching)
        batch_size = auto_batch_size(captioner, opts)
    pipeline = Pipeline(
        captioner,
        PipelineOptions(batch_size=int(batch_size), overlap=overlap, gpu_decode=gpu_decode),
    )
    bar = None
    if progress:
        from tqdm import tqdm

        total = len(images) if hasattr(images, "__len__") else None  # type: ignore[arg-type]
        bar = tqdm(total=total, unit="img", desc="captioning", dynamic_ncols=True)
    try:
        yield from pipeline.run(images, opts, bar)
    finally:
        if bar is not None:
            bar.close()
