"""What a score or a timing was measured with: library versions and hardware."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

_LIBRARIES = (
    "blipcap",
    "torch",
    "onnxruntime",
    "numpy",
    "pillow",
    "tokenizers",
    "safetensors",
    "pycocoevalcap",
)


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the libraries that can change a caption or a score."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES + extra:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def hardware() -> dict[str, Any]:
    """The machine: OS, CPU, cores, memory and (when torch is already loaded) the GPU."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": memory_total_bytes(),
    }
    torch = sys.modules.get("torch")  # never import torch just to describe the machine
    if torch is not None:
        try:
            if torch.cuda.is_available():
                i = torch.cuda.current_device()
                props = torch.cuda.get_device_properties(i)
                info["gpu"] = props.name
                info["gpu_memory_bytes"] = int(props.total_memory)
                info["cuda"] = torch.version.cuda
        except Exception:  # a broken driver must not break a report
            pass
    return info


def describe_hardware(hw: dict[str, Any]) -> str:
    """One line for a Markdown header."""
    parts = [f"{hw.get('cpu')} ({hw.get('cpu_count')} logical CPUs)"]
    if hw.get("memory_bytes"):
        parts.append(f"{hw['memory_bytes'] / 2**30:.0f} GiB RAM")
    if hw.get("gpu"):
        parts.append(f"GPU {hw['gpu']} ({hw.get('gpu_memory_bytes', 0) / 2**30:.0f} GiB)")
    parts.append(hw.get("platform", ""))
    return ", ".join(p for p in parts if p)
