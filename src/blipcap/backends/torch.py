"""The PyTorch backend: the lean BLIP model on CPU or CUDA, fp32/fp16/bf16."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._optional import require
from ..arrays import TorchOps
from ..errors import BackendError
from ..model.config import BlipConfig
from .base import Capabilities, check_length
from .cuda import fast_path_enabled

DTYPES = ("float32", "float16", "bfloat16")


def resolve_device(device: str) -> str:
    torch = require("torch", "torch", "the torch backend")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(
            "--device cuda was requested but PyTorch sees no CUDA GPU; use --device cpu, or "
            "install a CUDA build of torch (https://pytorch.org/get-started/locally/)"
        )
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    torch = require("torch", "torch", "the torch backend")
    if dtype == "auto":
        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "float32"
    if dtype not in DTYPES:
        raise BackendError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return dtype


class TorchSession:
    """Decoder state for one batch: shared cross-attention K/V, preallocated self-attention cache."""

    def __init__(self, backend: TorchBackend, image_embeds, rows_per_image: int, max_len: int):
        torch = backend.torch
        model = backend.model
        self.backend = backend
        self.rows_per_image = rows_per_image
        with torch.no_grad():
            self.cross = model.text_decoder.cross_kv(image_embeds)
            rows = image_embeds.shape[0] * rows_per_image
            self.cache = model.text_decoder.new_cache(rows, max_len, backend.device, backend.dtype)

    def step(self, input_ids):
        torch = self.backend.torch
        with torch.no_grad():
            logits = self.backend.model.text_decoder(
                input_ids, self.cache, self.cross, self.rows_per_image
            )
        return logits.float()

    def reorder(self, rows) -> None:
        with self.backend.torch.no_grad():
            self.cache.reorder(rows)


class TorchBackend:
    """Loads a Hugging Face BLIP checkpoint into the lean model."""

    name = "torch"

    def __init__(
        self, directory: Path, config: BlipConfig, device: str = "auto", dtype: str = "auto"
    ):
        self.torch = require("torch", "torch", "the torch backend")
        from ..model.weights import load_model

        self.device = resolve_device(device)
        self.dtype_name = resolve_dtype(dtype, self.device)
        self.dtype = getattr(self.torch, self.dtype_name)
        self.config = config
        self.model = load_model(directory, config, self.dtype, self.device)
        self.ops = TorchOps(self.device)
        # CUDA: static KV cache + graph-captured decode steps (backends/cuda.py).
        # The CPU keeps the default path, whose numerics the parity suite pins.
        self.fast_path = None
        if fast_path_enabled(self.device):
            from .cuda import FastPath, FastPathOptions

            self.fast_path = FastPath(self, FastPathOptions.from_env())

    @property
    def capabilities(self) -> Capabilities:
        fast = self.fast_path is not None
        return Capabilities(overlap=fast, device_normalize=True, static_decode=fast)

    def encode(self, pixel_values):
        """Normalized pixels (numpy, or a tensor on any device) -> image embeddings on the device."""
        torch = self.torch
        pixels = pixel_values
        if isinstance(pixels, np.ndarray):
            pixels = torch.from_numpy(np.ascontiguousarray(pixels))
            if self.device.startswith("cuda"):
                pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        with torch.no_grad():
            return self.model.vision_model(pixels.to(self.dtype))

    def start(self, pixel_values: np.ndarray, rows_per_image: int, max_len: int):
        check_length(max_len, self.config.text.max_position_embeddings)
        return self.start_encoded(self.encode(pixel_values), rows_per_image, max_len)

    def start_encoded(self, image_embeds, rows_per_image: int, max_len: int):
        check_length(max_len, self.config.text.max_position_embeddings)
        if self.fast_path is not None:
            return self.fast_path.start_from_embeds(image_embeds, rows_per_image, max_len)
        return TorchSession(self, image_embeds, rows_per_image, max_len)
