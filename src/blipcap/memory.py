"""Process memory: resident set, peak meters, out-of-memory classification, allocator settings.

One place for what batching (auto batch size, OOM back-off), ``blipcap bench``
and the server need to know about memory:

* :func:`rss_bytes` - the resident set now; :func:`rss_high_water_bytes` -
  its peak since the process started (or since :func:`reset_high_water`);
* :class:`RssSampler` - the resident set sampled in a thread, for platforms
  without a kernel high-water mark and for in-process benchmarks;
* :class:`PeakMeter` - the peak of a block of code (CUDA: torch's allocated
  bytes; Linux: the kernel's VmHWM, reset at the start; else sampled);
* :func:`is_out_of_memory` - whether an exception is an allocation failure
  (torch CPU/CUDA, ONNX Runtime, Python), and :func:`release_cached_memory`;
* :func:`return_large_frees_to_the_os` - glibc's mmap threshold, for a
  service whose decode threads would otherwise keep freed gigabytes.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from .errors import OutOfMemoryError

RSS_SAMPLE_S = 0.005
# Substrings of allocation failures in the messages of torch (CPU and CUDA), ONNX Runtime,
# the CUDA runtime and C++ (std::bad_alloc surfaced by bindings), lower-cased.
OOM_MESSAGES = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "failed to allocate",
    "bad_alloc",
    "cudaerrormemoryallocation",
)


# -- the resident set -----------------------------------------------------------------------


def rss_bytes() -> int | None:
    """This process's resident set size now (None where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return None


def _status_field(name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_high_water_bytes() -> int:
    """This process's peak resident set (kernel-tracked, nothing missed).

    Linux: VmHWM, which :func:`reset_high_water` can reset (``getrusage``'s
    ``ru_maxrss`` cannot be reset, and Linux carries it across fork and exec).
    Elsewhere: ``ru_maxrss`` (bytes on macOS, KiB on the BSDs).
    """
    hwm = _status_field("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_high_water() -> bool:
    """Reset the kernel's high-water mark to the current resident set; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_field("VmHWM") is not None


class RssSampler:
    """Samples the resident set in a thread; ``peak`` is the highest value seen."""

    def __init__(self, interval: float = RSS_SAMPLE_S):
        self.interval = interval
        self.peak = rss_bytes() or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blipcap-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes() or 0)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes() or 0)


class PeakMeter:
    """Peak memory of the process (CPU: resident set; CUDA: torch's allocated bytes) in a block.

    On Linux the kernel's own high-water mark (VmHWM) is reset at the start
    and read at the end; elsewhere a thread samples the resident set every
    millisecond.
    """

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.peak: int | None = None
        self._sampler: RssSampler | None = None
        self._hwm = False

    def __enter__(self) -> PeakMeter:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return self
        self._hwm = reset_high_water()
        if not self._hwm:
            self._sampler = RssSampler(interval=0.001).__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            self.peak = int(torch.cuda.max_memory_allocated())
        elif self._hwm:
            self.peak = _status_field("VmHWM")
        elif self._sampler is not None:
            self._sampler.__exit__(*exc)
            self.peak = self._sampler.peak or None


# -- out of memory ----------------------------------------------------------------------------


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/CPU allocation failures from torch, ONNX Runtime or Python itself.

    blipcap's own :class:`~blipcap.errors.OutOfMemoryError` is a final item
    error (the image did not fit even alone), not a failure to retry, so it is
    not counted here; callers that report rather than retry check for it too.
    """
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    if name == "OutOfMemoryError" and not isinstance(exc, OutOfMemoryError):
        return True  # torch.cuda.OutOfMemoryError
    if isinstance(exc, RuntimeError) or "onnxruntime" in type(exc).__module__:
        return mentions_out_of_memory(str(exc))
    return False


def mentions_out_of_memory(text: str) -> bool:
    """Whether an error message reports a failed allocation (see ``OOM_MESSAGES``)."""
    text = text.lower()
    return any(s in text for s in OOM_MESSAGES)


def release_cached_memory() -> None:
    """Hand torch's cached, unused CUDA blocks back to the driver (after an out-of-memory error)."""
    try:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass


# -- the C allocator ----------------------------------------------------------------------------


def return_large_frees_to_the_os(threshold: int = 1 << 20) -> bool:
    """Have the C allocator hand blocks of ``threshold`` bytes or more back to the OS when freed.

    glibc serves allocations below a threshold that grows with use (up to
    32 MiB) from per-thread arenas and keeps what is freed there; a service
    whose worker threads decode large images then holds several gigabytes of
    freed memory (measured: 16 threads decoding 7000x7000 images peaked at
    3.1 GB more than the process's baseline, 0.8 GB with a fixed 1 MiB
    threshold), which the decode-memory budget cannot see. Fixing the
    threshold keeps the process's memory close to what the budget counts.
    Returns whether it took effect (glibc only; elsewhere nothing changes).
    """
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, int(threshold)))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


__all__ = [
    "PeakMeter",
    "RssSampler",
    "is_out_of_memory",
    "mentions_out_of_memory",
    "release_cached_memory",
    "reset_high_water",
    "return_large_frees_to_the_os",
    "rss_bytes",
    "rss_high_water_bytes",
]
