"""The CUDA backend's overlapped stages: image bytes in, encoded batches out, so the GPU never waits.

:class:`Pipeline` is a set of :mod:`blipcap.engine` stages (prepare, encode,
decode); the engine's one loop runs them, so results are the same records in
the same order as on every other path. What they add over the plain stages:

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

from ..errors import BackendError, InputError
from ..images import DEFAULT_LIMITS, ImageInput, ImageLimits, load_image, load_source
from ..inputs import Prepared, is_url, read_source, source_label
from ..results import Caption, ItemError
from .base import Preencoded


@dataclass(frozen=True)
class PipelineOptions:
    overlap: bool = True
    """Encode batch N+1 on a side CUDA stream while batch N decodes (CUDA only)."""
    gpu_decode: bool = False
    """nvJPEG via torchvision.io.decode_jpeg on the GPU (opt-in: its resize differs from Pillow's)."""
    decode_workers: int | None = None


@dataclass(frozen=True)
class _Pixels:
    """What the prepare stage hands on: resized uint8 pixels, or JPEG bytes for nvJPEG."""

    pixels: np.ndarray | None = None  # (H, W, 3) uint8
    jpeg: bytes | None = None


def plain_jpeg(data: bytes, limits: ImageLimits) -> bool:
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
    """The engine's stages on the torch backend: uint8 copies, device normalization, overlap.

    ``generate(decoding_backend, pixels, options)`` runs :func:`blipcap.decoding.generate`
    with the model's prompt and special tokens (the captioner supplies it).
    """

    name = "blipcap-gpu-decode"

    def __init__(
        self,
        backend,
        preprocess,
        generate,
        *,
        limits: ImageLimits = DEFAULT_LIMITS,
        workers: int = 2,
        options: PipelineOptions | None = None,
    ):
        if not getattr(getattr(backend, "capabilities", None), "device_normalize", False):
            raise BackendError(
                "the GPU pipeline runs on the torch backend; use Captioner(..., backend='torch')"
            )
        self.backend = backend
        self.preprocess = preprocess
        self.generate = generate
        self.limits = limits
        self.options = options or PipelineOptions()
        self.torch = backend.torch
        self.device = backend.device
        self.cuda = self.device.startswith("cuda") and self.torch.cuda.is_available()
        self.overlap = self.options.overlap
        self.workers = max(1, int(self.options.decode_workers or workers))
        self.torchvision_io = _torchvision_io(self.cuda) if self.options.gpu_decode else None
        self._staging: list[Any] = []
        self._staging_free: list[Any] = []
        if self.cuda:
            self.copy_stream = self.torch.cuda.Stream(device=self.device)
            self.encode_stream = self.torch.cuda.Stream(device=self.device)

    @property
    def recorded_options(self) -> dict[str, str]:
        """What results record in their options beyond the decoding options."""
        return {"image_decode": "gpu"} if self.options.gpu_decode else {}

    # -- prepare: CPU workers -----------------------------------------------------------------

    def prepare(self, source: Any) -> Prepared:
        label = source_label(source)
        try:
            if self.options.gpu_decode and isinstance(
                source, (bytes, str, os.PathLike, ImageInput)
            ):
                data = self._raw_bytes(source, label)
                if data is not None and plain_jpeg(data, self.limits):
                    return Prepared(label, pixels=_Pixels(jpeg=data))
                if data is not None:
                    image = load_image(data, self.limits, name=label or "<bytes>")
                    return Prepared(label, pixels=_Pixels(self.preprocess.to_uint8(image)))
            image = load_source(source, self.limits)
            return Prepared(label, pixels=_Pixels(self.preprocess.to_uint8(image)))
        except (InputError, OSError, ValueError) as exc:
            return Prepared(label, error=ItemError.from_exception(exc))

    def _raw_bytes(self, source: Any, label: str | None) -> bytes | None:
        """The file's bytes (size-capped) for local files and bytes; None for anything else."""
        if isinstance(source, ImageInput):
            if source.kind not in ("file", "bytes"):
                return None
            source = source.payload
        if is_url(source):
            return None
        return read_source(source, self.limits.max_bytes, label or "<bytes>")

    # -- encode: copy, normalize, vision encoder -------------------------------------------------

    def encode(self, items) -> tuple[Any, Any]:
        """Good items -> (image embeddings, the event that marks them ready; None off CUDA)."""
        return self.encode_pixels(self._to_device([p.pixels for p in items]))

    def encode_pixels(self, pixels_u8) -> tuple[Any, Any]:
        """(N, 3, H, W) uint8 on the device -> (embeddings, ready); on CUDA on the encoder stream."""
        torch = self.torch
        if not self.cuda:
            with torch.no_grad():
                return self.backend.encode(self.preprocess.normalize_tensor(torch, pixels_u8)), None
        stream = self.encode_stream if self.overlap else torch.cuda.current_stream()
        stream.wait_stream(self.copy_stream)
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            x = self.preprocess.normalize_tensor(torch, pixels_u8)
            embeds = self.backend.encode(x)
            ready = torch.cuda.Event()
            ready.record(stream)
        pixels_u8.record_stream(stream)
        return embeds, ready

    def _to_device(self, items: list[_Pixels]):
        """The batch as an (N, 3, H, W) uint8 device tensor (pinned staging + async copy on CUDA)."""
        torch = self.torch
        h, w = self.preprocess.size
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
            self._staging = [
                torch.empty((n, h, w, 3), dtype=torch.uint8).pin_memory() for _ in range(2)
            ]
            self._staging_free = [torch.cuda.Event() for _ in range(2)]
            for e in self._staging_free:
                e.record()
        self._staging.append(self._staging.pop(0))
        self._staging_free.append(self._staging_free.pop(0))
        return self._staging[-1], self._staging_free[-1]

    def _merge_gpu_decoded(self, items: list[_Pixels], cpu_decoded):
        """nvJPEG-decode the JPEG items and interleave them with the CPU-decoded ones, in order."""
        torch = self.torch
        jpegs = [it for it in items if it.jpeg is not None]
        h, w = self.preprocess.size
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
            out.append(next(gpu_it) if it.jpeg is not None else next(cpu_it))
        return torch.stack(out)

    # -- decode: on the main stream -------------------------------------------------------------

    def decode(self, encoded, options) -> list[list[list[int]]]:
        """Token ids for encoded images, once their encoder has finished."""
        embeds, ready = encoded
        if ready is not None:
            torch = self.torch
            torch.cuda.current_stream().wait_event(ready)
            embeds.record_stream(torch.cuda.current_stream())
        preencoded = Preencoded(self.backend, embeds, embeds.shape[0])
        return self.generate(preencoded, preencoded.pixels, options)


def _torchvision_io(cuda: bool):
    if not cuda:
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
    return tvio


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


def caption_stream(
    captioner,
    images: Iterable[Any],
    *args: Any,
    overlap: bool = True,
    gpu_decode: bool = False,
    **kwargs: Any,
) -> Iterator[Caption]:
    """``captioner.caption_iter(images, ...)`` through this pipeline, with its two switches.

    Same inputs, options and records as ``Captioner.caption_iter`` (which is
    what runs); on a CPU the same steps run synchronously.
    """
    options = PipelineOptions(overlap=overlap, gpu_decode=gpu_decode)
    return captioner.caption_iter(images, *args, pipeline=options, **kwargs)
