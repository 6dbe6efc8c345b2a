"""``blipcap bench``: images/s and peak memory across batch size x beams x generated length.

Speed depends on how many tokens are generated, so every configuration
forces its length (``min_new_tokens == max_new_tokens``): the numbers are then
the same for random and real weights, and for any image content.

Memory, measured honestly per device:

* CUDA (torch backend): ``torch.cuda.max_memory_allocated`` over the timed
  run, after resetting the peak - weights, activations and caches that torch
  allocated, not the CUDA context or allocator slack.
* CPU, isolated (the default on CPU): each configuration runs in a fresh
  Python process that loads the model and runs it; the figure is that
  process's resident-set high-water mark (VmHWM; ``getrusage().ru_maxrss``
  off Linux). That is
  what a machine must have to run the configuration from a cold start,
  including any transient peak while loading weights.
* CPU, in-process (``--no-isolate``, and :func:`measure` called from Python):
  the resident set sampled every 5 ms during the timed run. Spikes shorter
  than that can be missed, and memory the allocator kept from earlier
  configurations is counted: treat it as an estimate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import OutOfMemoryError
from ..memory import RssSampler, is_out_of_memory, rss_bytes, rss_high_water_bytes
from ..options import CaptionOptions

RESULT_MARKER = "BLIPCAP_BENCH_RESULT "

MEMORY_METHODS = {
    "cuda_max_allocated": "torch.cuda.max_memory_allocated during the timed run",
    "rss_high_water_fresh_process": (
        "peak resident memory of a fresh process that loads the model and runs this "
        "configuration (VmHWM; getrusage ru_maxrss off Linux)"
    ),
    "rss_sampled": "resident memory sampled every 5 ms during the timed run, in one process",
}


@dataclass(frozen=True)
class BenchConfig:
    batch_size: int
    num_beams: int
    length: int
    """Generated tokens, forced."""

    def options(self) -> CaptionOptions:
        return forced_length_options(self.num_beams, self.length)


def forced_length_options(num_beams: int, length: int) -> CaptionOptions:
    """Decoding that generates exactly ``length`` tokens (no prompt), with ``num_beams`` beams."""
    return CaptionOptions(num_beams=num_beams, max_new_tokens=length, min_new_tokens=length)


@dataclass
class Measurement:
    """One configuration's result."""

    batch_size: int
    num_beams: int
    length: int
    status: str = "ok"
    """ok, oom, error, timeout or skipped."""
    images: int = 0
    seconds: float | None = None
    images_per_s: float | None = None
    peak_memory_bytes: int | None = None
    memory_method: str | None = None
    baseline_memory_bytes: int | None = None
    """Memory in use before the timed run (the loaded model)."""
    note: str | None = None

    @property
    def seconds_per_image(self) -> float | None:
        return 1.0 / self.images_per_s if self.images_per_s else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds_per_image"] = self.seconds_per_image
        return d


def measure(
    captioner: Any,
    batch_size: int,
    num_beams: int,
    length: int,
    images: Sequence[Any],
    *,
    warmup: bool = True,
) -> Measurement:
    """Caption ``images`` at one configuration and measure throughput and peak memory.

    One untimed warm-up batch runs first (lazy initialisation, allocator
    growth, kernel selection). ``images`` are what the captioner accepts
    (paths, bytes, PIL images); give at least ``batch_size`` of them. Out of
    memory is a result (status ``oom``), not an exception.
    """
    result = Measurement(batch_size, num_beams, length)
    options = forced_length_options(num_beams, length)
    device = str(captioner.provenance_for(options).device)
    backend = str(captioner.provenance_for(options).backend)
    on_cuda = device.startswith("cuda")
    torch = None
    if on_cuda:
        import torch  # the torch backend is loaded already when it runs on CUDA

    try:
        if warmup:
            _check(
                captioner.caption(list(images[:batch_size]), options=options, batch_size=batch_size)
            )
        if on_cuda and backend == "torch":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            result.baseline_memory_bytes = int(torch.cuda.memory_allocated(device))
            t0 = time.perf_counter()
            _check(captioner.caption(list(images), options=options, batch_size=batch_size))
            torch.cuda.synchronize(device)
            result.seconds = time.perf_counter() - t0
            result.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device))
            result.memory_method = "cuda_max_allocated"
        elif on_cuda:
            t0 = time.perf_counter()
            _check(captioner.caption(list(images), options=options, batch_size=batch_size))
            result.seconds = time.perf_counter() - t0
            result.note = "GPU memory of ONNX Runtime is not measured"
        else:
            result.baseline_memory_bytes = rss_bytes()
            with RssSampler() as sampler:
                t0 = time.perf_counter()
                _check(captioner.caption(list(images), options=options, batch_size=batch_size))
                result.seconds = time.perf_counter() - t0
            result.peak_memory_bytes = sampler.peak
            result.memory_method = "rss_sampled"
    except Exception as exc:
        oom = isinstance(exc, OutOfMemoryError) or is_out_of_memory(exc)
        result.status = "oom" if oom else "error"
        result.note = f"{type(exc).__name__}: {exc}"[:500]
        return result
    result.images = len(images)
    result.images_per_s = len(images) / result.seconds if result.seconds else None
    return result


class _ItemFailed(Exception):
    pass


def _check(results: Sequence[Any]) -> None:
    for r in results:
        if getattr(r, "error", None) is not None:
            raise _ItemFailed(f"{r.error.type}: {r.error.message}")


# --- inputs ---------------------------------------------------------------------------------


def random_images(count: int, width: int = 640, height: int = 480, seed: int = 0) -> list[Any]:
    """Distinct random RGB images in memory (decoding is not part of the timing)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
        for _ in range(count)
    ]


@dataclass(frozen=True)
class Inputs:
    """What each configuration captions: random images, or files cycled to the needed count."""

    paths: tuple[str, ...] = ()
    width: int = 640
    height: int = 480
    seed: int = 0

    def make(self, count: int) -> list[Any]:
        if self.paths:
            return [self.paths[i % len(self.paths)] for i in range(count)]
        return random_images(count, self.width, self.height, self.seed)

    def describe(self) -> str:
        if self.paths:
            return f"{len(self.paths)} given image file(s), decoded for every caption"
        return f"random {self.width}x{self.height} RGB images in memory (no decoding)"


# --- the sweep ------------------------------------------------------------------------------


@dataclass
class BenchSettings:
    model: str | None = None
    backend: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    batch_sizes: tuple[int, ...] = (1, 4, 16)
    beams: tuple[int, ...] = (1, 3)
    lengths: tuple[int, ...] = (20,)
    batches: int = 2
    """Timed batches per configuration (after one warm-up batch)."""
    inputs: Inputs = field(default_factory=Inputs)
    max_time_s: float = 600.0
    isolate: bool | None = None
    """Fresh process per configuration; None = on CPU only."""

    def configs(self) -> list[BenchConfig]:
        return [
            BenchConfig(b, k, n)
            for n in sorted(set(self.lengths))
            for k in sorted(set(self.beams))
            for b in sorted(set(self.batch_sizes))
        ]


def _dominated(config: BenchConfig, failed: list[BenchConfig]) -> BenchConfig | None:
    """A smaller-or-equal configuration that already ran out of memory, if any."""
    for f in failed:
        if (
            config.batch_size >= f.batch_size
            and config.num_beams >= f.num_beams
            and config.length >= f.length
        ):
            return f
    return None


def run_sweep(
    settings: BenchSettings,
    captioner_factory: Callable[[], Any] | None = None,
    on_progress: Callable[[BenchConfig, Measurement], None] | None = None,
    on_start: Callable[[BenchConfig], None] | None = None,
) -> tuple[list[Measurement], dict[str, Any]]:
    """Measure every configuration within ``settings.max_time_s``.

    Returns the measurements (skipped ones included, with the reason) and the
    run's provenance (model, revision, backend, device, dtype, random_weights).
    ``captioner_factory`` builds the in-process captioner; isolated runs load
    the model in each child process instead.
    """
    start = time.monotonic()
    configs = settings.configs()
    measurements: list[Measurement] = []
    failed: list[BenchConfig] = []
    captioner = None
    provenance: dict[str, Any] = {}

    def in_process() -> Any:
        nonlocal captioner, provenance
        if captioner is None:
            captioner = captioner_factory() if captioner_factory else _open(settings)
            provenance = _provenance(captioner)
        return captioner

    isolate = settings.isolate
    if isolate is None:
        # Deciding needs the resolved device: a CUDA run is measured in-process.
        isolate = _resolved_device(settings) == "cpu"
    if isolate:
        from ..hub import resolve_model

        # Find (or download) the model once: a missing model is one clear error, not one per
        # configuration, and the child processes then find it in the cache.
        resolve_model(settings.model)
    for config in configs:
        if on_start:
            on_start(config)
        remaining = settings.max_time_s - (time.monotonic() - start)
        oom = _dominated(config, failed)
        if oom is not None:
            m = Measurement(config.batch_size, config.num_beams, config.length, status="skipped")
            m.note = (
                f"skipped: batch {oom.batch_size} x beams {oom.num_beams} already ran out of memory"
            )
        elif remaining <= 0:
            m = Measurement(config.batch_size, config.num_beams, config.length, status="skipped")
            m.note = f"skipped: the {settings.max_time_s:g} s time budget was used up"
        else:
            n = config.batch_size * max(1, settings.batches)
            if isolate:
                m, prov = _measure_isolated(settings, config, n, remaining)
                provenance = provenance or prov
            else:
                m = measure(
                    in_process(),
                    config.batch_size,
                    config.num_beams,
                    config.length,
                    settings.inputs.make(n),
                )
        if m.status == "oom":
            failed.append(config)
        measurements.append(m)
        if on_progress:
            on_progress(config, m)
    return measurements, provenance


def _open(settings: BenchSettings) -> Any:
    from ..captioner import Captioner

    return Captioner(
        settings.model, backend=settings.backend, device=settings.device, dtype=settings.dtype
    )


def _provenance(captioner: Any) -> dict[str, Any]:
    p = captioner.provenance_for(forced_length_options(1, 1))
    return {
        "model": p.model,
        "revision": p.revision,
        "backend": p.backend,
        "device": p.device,
        "dtype": p.dtype,
        "random_weights": bool(getattr(captioner, "random_weights", False)),
    }


def _resolved_device(settings: BenchSettings) -> str:
    if settings.device in ("cpu", "cuda"):
        return settings.device
    if settings.backend == "onnx":
        return "cpu"  # ONNX Runtime's CPU provider unless the model directory asks otherwise
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _measure_isolated(
    settings: BenchSettings, config: BenchConfig, count: int, timeout: float
) -> tuple[Measurement, dict[str, Any]]:
    spec = {
        "model": settings.model,
        "backend": settings.backend,
        "device": settings.device,
        "dtype": settings.dtype,
        "config": asdict(config),
        "count": count,
        "inputs": asdict(settings.inputs),
    }
    m = Measurement(config.batch_size, config.num_beams, config.length)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "blipcap.evaluation.bench"],
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            timeout=max(timeout, 1.0),
        )
    except subprocess.TimeoutExpired:
        m.status = "timeout"
        m.note = f"stopped at the time budget ({timeout:.0f} s left when it started)"
        return m, {}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            payload = json.loads(line[len(RESULT_MARKER) :])
            payload["measurement"].pop("seconds_per_image", None)
            return Measurement(**payload["measurement"]), payload["provenance"]
    tail = proc.stderr.strip().splitlines()[-3:]
    if proc.returncode in (-9, 137):
        m.status = "oom"
        m.note = "the process was killed (SIGKILL), most likely by the out-of-memory killer"
    else:
        m.status = "error"
        m.note = f"exit code {proc.returncode}: {' / '.join(tail)}"[:500]
    return m, {}


def _worker() -> None:
    """Child process: load the model, measure one configuration, print the result."""
    spec = json.loads(sys.stdin.read())
    settings = BenchSettings(
        model=spec["model"], backend=spec["backend"], device=spec["device"], dtype=spec["dtype"]
    )
    config = BenchConfig(**spec["config"])
    inputs = Inputs(**{k: tuple(v) if k == "paths" else v for k, v in spec["inputs"].items()})
    captioner = _open(settings)
    images = inputs.make(spec["count"])
    loaded_rss = rss_bytes()
    m = measure(captioner, config.batch_size, config.num_beams, config.length, images)
    if m.memory_method == "rss_sampled":
        m.peak_memory_bytes = rss_high_water_bytes()
        m.memory_method = "rss_high_water_fresh_process"
        m.baseline_memory_bytes = loaded_rss
    payload = {"measurement": m.to_dict(), "provenance": _provenance(captioner)}
    sys.stdout.write(RESULT_MARKER + json.dumps(payload) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    _worker()
