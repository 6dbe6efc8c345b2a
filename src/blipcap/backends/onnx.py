"""The ONNX Runtime backend: an exported directory (``blipcap export onnx``), no torch needed.

Two sessions: the vision graph runs once per batch and yields every layer's
cross-attention keys/values, one copy per image; the decoder-step graph then
runs once per generated token. Tensors that stay with the model between
steps (the cross keys/values, the self-attention cache) are kept as
``OrtValue`` objects bound with IOBinding, so on a GPU they never travel to
the host and back; only the logits do. Decoding itself is the same code as
the torch backend's (:mod:`blipcap.decoding` over :class:`~blipcap.arrays.NumpyOps`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..arrays import NumpyOps
from ..errors import BackendError, ModelLoadError
from ..memory import mentions_out_of_memory
from ..model.config import BlipConfig
from .base import Capabilities, check_length
from .onnx_format import (
    CACHE_ROWS,
    INPUT_IDS,
    LOGITS,
    PIXELS,
    Manifest,
    cross_names,
    past_names,
    present_names,
    reexport_hint,
)

THREADS_ENV = "BLIPCAP_ONNX_THREADS"
GPU_MEM_LIMIT_ENV = "BLIPCAP_ONNX_GPU_MEM_LIMIT"


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads share a core's matrix units)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        allowed = set(range(os.cpu_count() or 1))
    try:
        cores: set[tuple[str, str]] = set()
        cpu = phys = core = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "processor":
                    cpu, phys, core = int(value), None, None
                elif key == "physical id":
                    phys = value
                elif key == "core id":
                    core = value
                if cpu in allowed and phys is not None and core is not None:
                    cores.add((phys, core))
        if cores:
            return len(cores)
    except (OSError, ValueError):
        pass
    return max(1, len(allowed))


def _ort():
    return require("onnxruntime", "onnx", "the ONNX backend")


class OnnxSession:
    """Decoder state for one batch: bound cross keys/values and the self-attention cache."""

    def __init__(self, backend: OnnxBackend, cross: list[Any], rows_per_image: int):
        self.backend = backend
        ort = backend.ort
        images = cross[0].shape()[0]
        self.rows = images * rows_per_image
        self.cross = cross
        L, H, hd = backend.cache_shape
        empty = np.zeros((self.rows, H, 0, hd), np.float32)
        self.past = [ort.OrtValue.ortvalue_from_numpy(empty, *backend.ort_device)] * (2 * L)
        self.cache_rows = np.arange(self.rows, dtype=np.int64)

    def step(self, input_ids) -> np.ndarray:
        backend = self.backend
        binding = backend.decoder.io_binding()
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)  # referenced until the run ends
        binding.bind_cpu_input(INPUT_IDS, ids)
        binding.bind_cpu_input(CACHE_ROWS, self.cache_rows)
        for name, value in zip(backend.past_names, self.past, strict=True):
            binding.bind_ortvalue_input(name, value)
        for name, value in zip(backend.cross_names, self.cross, strict=True):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output(LOGITS, "cpu")
        for name in backend.present_names:
            binding.bind_output(name, *backend.ort_device)
        backend.run(backend.decoder, binding, "the decoder")
        logits, *self.past = binding.get_outputs()
        self.cache_rows = np.arange(self.rows, dtype=np.int64)
        return logits.numpy()

    def reorder(self, rows) -> None:
        # Applied by the next step's graph (a Gather on the cache), wherever the cache lives.
        self.cache_rows = np.ascontiguousarray(rows, dtype=np.int64)


class OnnxBackend:
    """ONNX Runtime sessions over an exported directory: CPU by default, CUDA when available."""

    name = "onnx"
    capabilities = Capabilities()

    def __init__(
        self,
        directory: Path,
        config: BlipConfig,
        device: str = "auto",
        dtype: str = "auto",
        *,
        manifest: Manifest | None = None,
        digests: dict[str, str] | None = None,
        threads: int | None = None,
    ):
        self.ort = _ort()
        self.directory = Path(directory)
        self.config = config
        self.manifest = manifest or Manifest.read(self.directory)
        self.manifest.check_files(self.directory, digests)
        quantized = self.manifest.quantization is not None
        self.dtype_name = "int8" if quantized else "float32"
        if dtype not in ("auto", self.dtype_name):
            fix = (
                "export without --quantize for float32"
                if quantized
                else "export with --quantize int8 for int8"
            )
            raise BackendError(
                f"{self.directory} holds a {self.dtype_name} export; --dtype {dtype} is not "
                f"available with the onnx backend ({fix}, or use --dtype auto)"
            )
        self.device = self._resolve_device(device)
        self.ort_device = ("cuda", 0) if self.device == "cuda" else ("cpu", 0)
        t = config.text
        self.cache_shape = (
            t.num_hidden_layers,
            t.num_attention_heads,
            t.hidden_size // t.num_attention_heads,
        )
        self.cross_names = cross_names(t.num_hidden_layers)
        self.past_names = past_names(t.num_hidden_layers)
        self.present_names = present_names(t.num_hidden_layers)
        self.threads = threads or int(os.environ.get(THREADS_ENV, 0) or 0) or physical_cores()
        self.ops = NumpyOps()
        self.vision = self._session("vision")
        self.decoder = self._session("decoder")

    @classmethod
    def from_files(cls, files, config: BlipConfig, device: str = "auto", dtype: str = "auto"):
        """Open the export that :func:`blipcap.hub.resolve_model` found (``kind == "onnx"``)."""
        if files.kind != "onnx":
            raise BackendError(
                f"{files.path} is a Hugging Face checkpoint, not an ONNX export. Export it first: "
                f"blipcap export onnx --model {files.model_id} --out <dir>, then pass "
                "--model <dir> (or use --backend torch)"
            )
        if not files.config:
            raise ModelLoadError(
                f"config.json is missing from {files.path}; {reexport_hint(files.path)}"
            )
        return cls(files.path, config, device=device, dtype=dtype, digests=files.files)

    def _resolve_device(self, device: str) -> str:
        available = self.ort.get_available_providers()
        has_cuda = "CUDAExecutionProvider" in available
        if device == "auto":
            return "cuda" if has_cuda else "cpu"
        if device.startswith("cuda"):
            if not has_cuda:
                raise BackendError(
                    "--device cuda was requested but this ONNX Runtime has no CUDA provider "
                    f"(providers: {', '.join(available)}); install onnxruntime-gpu in place of "
                    "onnxruntime, or use --device cpu"
                )
            return "cuda"
        if device != "cpu":
            raise BackendError(
                f"unknown device {device!r} for the onnx backend; use auto, cpu or cuda"
            )
        return "cpu"

    def _providers(self) -> list[Any]:
        if self.device != "cuda":
            return ["CPUExecutionProvider"]
        cuda: dict[str, Any] = {"arena_extend_strategy": "kSameAsRequested"}
        limit = os.environ.get(GPU_MEM_LIMIT_ENV)
        if limit:
            cuda["gpu_mem_limit"] = int(limit)
        return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]

    def _session(self, graph: str):
        ort = self.ort
        path = self.directory / self.manifest.graphs[graph]["file"]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        # Memory patterns pre-plan one block for all of a run's intermediates, sized for
        # the largest shapes seen: BLIP-large int8 peaked 445 MiB higher at batch 8 with
        # them (1796 against 1351 MiB) and ran no faster. The arena stays on (off: 5 GiB+).
        opts.enable_mem_pattern = False
        opts.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
        try:
            return ort.InferenceSession(str(path), opts, providers=self._providers())
        except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated exception types
            raise ModelLoadError(
                f"ONNX Runtime cannot load {path}: {exc}. The file may be damaged; "
                f"{reexport_hint(self.directory)}"
            ) from exc

    def run(self, session, binding, what: str) -> None:
        try:
            session.run_with_iobinding(binding)
        except Exception as exc:  # noqa: BLE001
            if is_allocation_failure(exc):
                raise MemoryError(f"ONNX Runtime ran out of memory in {what}: {exc}") from exc
            raise BackendError(f"ONNX Runtime failed in {what}: {exc}") from exc

    def encode(self, pixel_values: np.ndarray) -> list[Any]:
        """The vision graph: normalized pixels -> every layer's cross-attention keys and values."""
        pixels = self.ort.OrtValue.ortvalue_from_numpy(
            np.ascontiguousarray(pixel_values, dtype=np.float32), *self.ort_device
        )
        binding = self.vision.io_binding()
        binding.bind_ortvalue_input(PIXELS, pixels)
        for name in self.cross_names:
            binding.bind_output(name, *self.ort_device)
        self.run(self.vision, binding, "the vision encoder")
        return binding.get_outputs()

    def start(self, pixel_values: np.ndarray, rows_per_image: int, max_len: int) -> OnnxSession:
        check_length(max_len, self.config.text.max_position_embeddings)
        return self.start_encoded(self.encode(pixel_values), rows_per_image, max_len)

    def start_encoded(self, cross: list[Any], rows_per_image: int, max_len: int) -> OnnxSession:
        check_length(max_len, self.config.text.max_position_embeddings)
        return OnnxSession(self, cross, rows_per_image)


def is_allocation_failure(exc: BaseException) -> bool:
    """ONNX Runtime reports allocation failures as generic runtime errors; recognise them by text."""
    return mentions_out_of_memory(str(exc))
