"""Batches sized to memory, and out-of-memory back-off.

The memory model: a batch of ``B`` images peaks at

    peak(B) = base + B * per_image(rows, length)

``base`` is what the process holds before the batch (weights, runtime);
``per_image`` is what one more image adds at these decoding settings
(``rows`` = beams, or captions per image when sampling; ``length`` = prompt +
generated tokens). Its parts, for activations of ``e`` bytes (4 for float32,
also for int8 ONNX exports, whose activations stay float32):

* vision encoder activations at their peak (the MLP of a layer):
  ``S * (2 * Dv + 2 * Dmlp) * e`` (S = image tokens, 577 at 384 px); ONNX
  Runtime also materializes the attention scores and probabilities,
  ``2 * heads * S**2 * 4`` (torch's SDPA does not);
* cross-attention keys/values, one copy per image: ``layers * 2 * S * Dt * e``;
* self-attention cache: ``layers * 2 * rows * length * Dt * e`` (x6 in the
  ONNX backend: the cache in, the cache out, the beam reorder, and the
  arena's growth as the cache lengthens, measured);
* decoding scores: ``rows * vocab * 40`` bytes (logits, log-softmax, beam
  candidates and their int64 indices).

per_image = vision + cross + cache + scores: an upper bound (the vision
activations are freed before decoding, but allocators keep some of them) that
held for 15 of the 16 settings ``benchmarks/memory.py`` measured on a CPU (the
16th 4% under). :func:`estimate_per_image` computes it; :func:`calibrate`
measures it on the running machine (peak memory of a batch of 1 and a batch
of 2 at the longest length; the slope is ``per_image``) and caches the result
on disk, keyed by model revision, backend, device, dtype and settings.

``batch_size="auto"`` picks the largest batch, up to a cap, whose predicted
``B * per_image`` fits the budget: 85% of free GPU memory (CUDA) or of
available RAM (the smaller of ``MemAvailable`` and the cgroup limit), or
``$BLIPCAP_MEMORY_BUDGET`` (e.g. ``2GiB``). When even the estimate times a
safety factor fits at the cap, nothing is measured.

Out of memory anyway (other processes, fragmentation): :func:`run_with_backoff`
halves the batch and retries, down to 1 image; an image that fails alone
becomes an :class:`~blipcap.errors.OutOfMemoryError` for that item. No item
is lost or reordered, and the captioner keeps the smaller size for the rest
of the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .errors import OptionsError, OutOfMemoryError
from .memory import PeakMeter, is_out_of_memory, release_cached_memory

log = logging.getLogger("blipcap.batching")

MEMORY_FRACTION = 0.85
BUDGET_ENV = "BLIPCAP_MEMORY_BUDGET"
# Beyond these, bigger batches stop paying: CPU throughput is flat past ~8
# images (benchmarks/cpu.py), an H100 keeps gaining up to ~256.
CPU_CAP = 8
GPU_CAP = 256
ESTIMATE_SAFETY = 1.25  # on top of an estimate that is already an upper bound
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


# -- the memory model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryModel:
    base_bytes: int
    per_image_bytes: int
    source: str
    """"measured" (calibrated on this machine) or "estimated" (the formula above)."""

    def peak(self, batch: int) -> int:
        return self.base_bytes + batch * self.per_image_bytes

    def max_batch(self, budget_bytes: int, cap: int) -> int:
        """Largest batch (1..cap) whose added memory fits ``budget_bytes``."""
        if self.per_image_bytes <= 0:
            return cap
        return max(1, min(cap, budget_bytes // self.per_image_bytes))


def estimate_per_image(
    config, rows: int, length: int, act_bytes: int = 4, backend: str = "torch"
) -> dict[str, int]:
    """The formula of the module docstring, part by part (bytes per image)."""
    v, t = config.vision, config.text
    s = v.seq_len
    vision = s * (2 * v.hidden_size + 2 * v.intermediate_size) * act_bytes
    if backend == "onnx":
        vision += 2 * v.num_attention_heads * s * s * 4
    cross = t.num_hidden_layers * 2 * s * t.hidden_size * act_bytes
    cache = t.num_hidden_layers * 2 * rows * length * t.hidden_size * act_bytes
    if backend == "onnx":
        cache *= 6
    scores = rows * t.vocab_size * 40
    total = vision + cross + cache + scores
    return {
        "vision": vision,
        "cross_kv": cross,
        "self_cache": cache,
        "scores": scores,
        "total": total,
    }


def activation_bytes(dtype: str) -> int:
    return 2 if dtype in ("float16", "bfloat16") else 4


# -- budgets ------------------------------------------------------------------------------------


def parse_bytes(text: str) -> int:
    """``"1500000000"``, ``"2GiB"``, ``"512M"``, ``"1.5g"`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text).lower())
    if not m:
        raise OptionsError(
            f"cannot read {text!r} as a memory size; write e.g. 2GiB, 512MiB or a number of bytes"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def available_ram() -> int | None:
    """Bytes of RAM this process can still use: MemAvailable, capped by a cgroup limit."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            import psutil

            avail = int(psutil.virtual_memory().available)
        except ImportError:
            return None
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            with open(limit_file) as f:
                raw = f.read().strip()
            with open(usage_file) as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if raw.isdigit() and int(raw) < (1 << 60):  # "max" or a huge number mean unlimited
            avail = min(avail, max(0, int(raw) - used))
        break
    return avail


def free_gpu_memory(device: str) -> int | None:
    """Free bytes on a CUDA device, plus what torch's cache holds but does not use."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        index = torch.device(device).index or 0
        free, _ = torch.cuda.mem_get_info(index)
        cached = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
        return int(free + max(0, cached))
    try:  # the torch-free ONNX path: NVML when the nvidia-ml-py package is installed
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).free)
    except Exception:  # noqa: BLE001 - no NVML, no driver: unknown
        return None


def memory_budget(device: str, fraction: float = MEMORY_FRACTION) -> int | None:
    """Bytes a batch may add: ``$BLIPCAP_MEMORY_BUDGET``, else ``fraction`` of free memory."""
    env = os.environ.get(BUDGET_ENV)
    if env:
        return parse_bytes(env)
    free = free_gpu_memory(device) if device.startswith("cuda") else available_ram()
    return None if free is None else int(free * fraction)


# -- calibration ----------------------------------------------------------------------------------


def _cache_path(key: dict[str, Any]):
    from .hub import blipcap_cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return blipcap_cache_dir() / "memory" / f"{digest}.json"


_CALIBRATED: dict[str, MemoryModel] = {}
_LOCK = threading.Lock()


def calibrate(
    run: Callable[[int], Any], device: str, key: dict[str, Any] | None = None
) -> MemoryModel:
    """Measure ``per_image`` and ``base`` by running batches of 1 and 2 (``run(batch_size)``).

    With a ``key``, the result is cached in this process and on disk
    (``~/.cache/blipcap/memory``), so each machine measures once per model
    and settings.
    """
    name = json.dumps(key, sort_keys=True) if key is not None else None
    with _LOCK:
        if name is not None and name in _CALIBRATED:
            return _CALIBRATED[name]
        path = _cache_path(key) if key is not None else None
        if path is not None:
            try:
                model = MemoryModel(**json.loads(path.read_text())["model"])
                _CALIBRATED[name] = model
                return model
            except (OSError, ValueError, KeyError, TypeError):
                pass
        log.info("measuring memory per image (once for this model and these settings)")
        peaks = []
        for batch in (1, 2):
            with PeakMeter(device) as meter:
                run(batch)
            if meter.peak is None:
                raise OptionsError("cannot measure memory on this platform; pass a batch size")
            peaks.append(meter.peak)
        per_image = max(0, peaks[1] - peaks[0])
        model = MemoryModel(peaks[0] - per_image, per_image, "measured")
        if name is not None:
            _CALIBRATED[name] = model
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(
                    json.dumps({"key": key, "model": asdict(model), "time": time.time()})
                )
                os.replace(tmp, path)
            except OSError:
                pass
        return model


def plan_batch_size(
    estimate_bytes: int,
    device: str,
    calibrate_fn: Callable[[], MemoryModel],
    budget_bytes: int | None = None,
    cap: int | None = None,
) -> tuple[int, MemoryModel | None, int | None]:
    """The auto batch size: (size, the model it came from, the budget used).

    Nothing is measured when the estimate (times a safety factor) fits at the cap.
    """
    cap = cap or (GPU_CAP if device.startswith("cuda") else CPU_CAP)
    budget = budget_bytes if budget_bytes is not None else memory_budget(device)
    if budget is None:
        return cap, None, None
    if cap * estimate_bytes * ESTIMATE_SAFETY <= budget:
        return cap, MemoryModel(0, int(estimate_bytes * ESTIMATE_SAFETY), "estimated"), budget
    model = calibrate_fn()
    return model.max_batch(budget, cap), model, budget


# -- out-of-memory back-off -------------------------------------------------------------------------


def run_with_backoff(
    run: Callable[[Sequence[Any]], list[Any]],
    items: Sequence[Any],
    on_shrink: Callable[[int], None] | None = None,
) -> list[Any]:
    """``run(items)`` -> one result per item; on out-of-memory, halve and retry down to 1.

    Returns one entry per item, in order: the result, or an
    :class:`OutOfMemoryError` for an item that does not fit even alone.
    ``on_shrink(size)`` is told each smaller size that was tried.
    """
    items = list(items)
    if not items:
        return []
    try:
        out = run(items)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        # Retried outside this block and without the traceback, whose frames hold the
        # failed batch's memory.
        out, failure = None, exc.with_traceback(None)
    if out is None:
        return retry_smaller(run, items, failure, on_shrink)
    if len(out) != len(items):
        raise RuntimeError(f"batch of {len(items)} gave {len(out)} results")
    return list(out)


def retry_smaller(
    run: Callable[[Sequence[Any]], list[Any]],
    items: Sequence[Any],
    exc: BaseException,
    on_shrink: Callable[[int], None] | None = None,
) -> list[Any]:
    """``run(items)`` just ran out of memory with ``exc``: run the halves (backing off further).

    A single item that failed becomes an :class:`OutOfMemoryError` entry.
    """
    items = list(items)
    release_cached_memory()
    if len(items) == 1:
        return [
            OutOfMemoryError(
                f"out of memory even for this image alone ({exc}); free memory, use a smaller "
                "model, fewer --beams or --num-captions, or --backend onnx --dtype int8"
            )
        ]
    half = (len(items) + 1) // 2
    log.warning("out of memory at batch size %d; retrying at %d", len(items), half)
    if on_shrink is not None:
        on_shrink(half)
    return run_with_backoff(run, items[:half], on_shrink) + run_with_backoff(
        run, items[half:], on_shrink
    )


class BatchSizer:
    """The batch size a run uses now: the planned size, lowered for good after an OOM."""

    def __init__(self, size: int):
        self.size = max(1, int(size))

    def shrink(self, size: int) -> None:
        self.size = max(1, min(self.size, int(size)))


# -- the captioner's auto batch size --------------------------------------------------------------


def rows_per_image(options) -> int:
    if options.num_beams > 1:
        return options.num_beams
    return options.num_captions if options.do_sample else 1


def auto_batch_size(
    captioner, options, budget_bytes: int | None = None, cap: int | None = None
) -> int:
    """``batch_size="auto"`` for a :class:`~blipcap.captioner.Captioner` and these options."""
    from .model.processing import synthetic_images
    from .version import __version__

    backend = captioner.backend
    prompt_len, length, rows, estimate = _demand(captioner, options)
    # Measure at the longest caption these options allow: the worst case.
    new = length - prompt_len
    forced = options.replace(
        min_new_tokens=new, max_new_tokens=new, min_length=None, max_length=None
    )
    height, width = captioner.preprocess.size

    def run(batch: int) -> None:
        captioner.generate_tokens(synthetic_images(batch, height, width), forced)

    key = {
        "model": captioner.files.model_id,
        "revision": captioner.files.revision,
        "backend": backend.name,
        "device": backend.device,
        "dtype": backend.dtype_name,
        "rows": rows,
        "length": length,
        "sampling": options.do_sample,
        "blipcap": __version__,
    }
    size, model, budget = plan_batch_size(
        estimate, backend.device, lambda: calibrate(run, backend.device, key), budget_bytes, cap
    )
    if model is not None:
        log.info(
            "auto batch size %d: %s %.0f MiB per image, budget %.0f MiB",
            size, model.source, model.per_image_bytes / 2**20, (budget or 0) / 2**20,
        )  # fmt: skip
    return size


def _demand(captioner, options) -> tuple[int, int, int, int]:
    """(prompt tokens, longest total length, rows per image, estimated bytes per image)."""
    backend = captioner.backend
    prompt_len = len(captioner.tokenizer.prompt_ids(options.prompt))
    _, length = options.token_limits(prompt_len)
    rows = rows_per_image(options)
    estimate = estimate_per_image(
        captioner.config, rows, length, activation_bytes(backend.dtype_name), backend.name
    )["total"]
    return prompt_len, length, rows, estimate


def check_fits(captioner, options) -> None:
    """Refuse settings the model cannot run or memory cannot hold even for one image.

    Structural limits: a caption and its prompt fit the model's positions
    (``text_config.max_position_embeddings``), and there are no more beams
    than words in the vocabulary. Memory: one image's estimate (the module
    docstring's formula, an upper bound) fits the budget of :func:`memory_budget`.
    Raises :class:`OptionsError` saying the limit and how to stay within it.
    """
    text = captioner.config.text
    prompt_len, length, rows, estimate = _demand(captioner, options)
    if length > text.max_position_embeddings:
        room = text.max_position_embeddings - prompt_len
        raise OptionsError(
            f"a caption of up to {length - prompt_len} new tokens after a {prompt_len}-token "
            f"prompt needs {length} positions, but this model has "
            f"{text.max_position_embeddings} (max_position_embeddings); use --max-new-tokens "
            f"{room} or less, or a shorter prompt"
        )
    if options.num_beams > text.vocab_size:
        raise OptionsError(
            f"--beams {options.num_beams} is more than the {text.vocab_size} words of the "
            "vocabulary; use fewer beams"
        )
    budget = memory_budget(captioner.backend.device)
    if budget is not None and estimate > budget:
        raise OptionsError(
            f"{rows} decoding row(s) per image (--beams/--num-captions) of up to {length} tokens "
            f"need about {_mib(estimate)} for one image, more than the {_mib(budget)} memory "
            f"budget ({int(MEMORY_FRACTION * 100)}% of free memory, or ${BUDGET_ENV}); lower "
            "--beams, --num-captions or --max-new-tokens, or free memory"
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"
