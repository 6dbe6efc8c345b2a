"""The contract every inference backend implements, and what the engine may ask of it.

A backend loads one model and runs its two halves: :meth:`Backend.encode`
(the vision encoder: normalized pixels -> what the decoder attends to) and a
decoder session (:meth:`Backend.start` / :meth:`Backend.start_encoded` ->
``step(input_ids) -> logits`` and ``reorder(rows)``), which
:func:`blipcap.decoding.generate` drives. :class:`Capabilities` says what else
it can do, so the engine asks instead of probing attributes. Backends import
only what lies below them (arrays, errors, model, memory), never the
captioner, batching, export or server layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Capabilities:
    """What a backend offers beyond the contract."""

    overlap: bool = False
    """Encoding overlaps decoding (the CUDA pipeline: copies, encoder and decoder on streams)."""
    device_normalize: bool = False
    """``encode`` takes pixels on the device (uint8 normalized there; torch tensors)."""
    static_decode: bool = False
    """Decoding runs on static buffers (graph-captured steps: backends/cuda.py)."""


class Session(Protocol):
    """The decoder state of one batch."""

    def step(self, input_ids: Any) -> Any: ...

    def reorder(self, rows: Any) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """One loaded model on one device (torch: CPU/CUDA; onnx: ONNX Runtime)."""

    name: str
    device: str
    dtype_name: str
    ops: Any
    """Array operations for decoding (:mod:`blipcap.arrays`)."""
    capabilities: Capabilities

    def encode(self, pixel_values: Any) -> Any:
        """Normalized pixels (N, 3, H, W) -> the images' encoding for :meth:`start_encoded`."""
        ...

    def start(self, pixel_values: np.ndarray, rows_per_image: int, max_len: int) -> Session:
        """Encode and open a decoder session: ``start_encoded(encode(pixels), ...)``."""
        ...

    def start_encoded(self, encoded: Any, rows_per_image: int, max_len: int) -> Session: ...


class Preencoded:
    """A :class:`blipcap.decoding.DecodingBackend` over images already encoded.

    :func:`~blipcap.decoding.generate` reads only the image count from the
    pixels it is given; :attr:`pixels` is a placeholder with that count.
    """

    def __init__(self, backend: Backend, encoded: Any, images: int):
        self.backend = backend
        self.ops = backend.ops
        self.encoded = encoded
        self.pixels = np.empty((images, 0), dtype=np.float32)

    def start(self, pixel_values: Any, rows_per_image: int, max_len: int) -> Session:
        return self.backend.start_encoded(self.encoded, rows_per_image, max_len)

    def subset(self, images: list[int]) -> Preencoded:
        """The same images' encodings for some of them (the degeneration guard decodes those
        again). Encodings are indexed by image on their first axis (torch embeddings)."""
        return Preencoded(self.backend, self.encoded[images], len(images))


def check_length(max_len: int, positions: int) -> None:
    """Refuse a decoding length beyond the model's positions, saying how to stay within it."""
    if max_len > positions:
        from ..errors import BackendError

        raise BackendError(
            f"a total length of {max_len} tokens exceeds the model's "
            f"{positions} positions; lower --max-new-tokens"
        )


__all__ = ["Backend", "Capabilities", "Preencoded", "Session", "check_length"]
