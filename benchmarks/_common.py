"""Helpers shared by the benchmark scripts: random full-shape checkpoints, inputs, machine info."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("BLIPCAP_TEST_CACHE", ROOT / ".cache" / "checkpoints"))


def random_checkpoint(shape: str = "large", seed: int = 3) -> Path:
    """The random-weight checkpoint the test-suite also uses (built once, cached on disk)."""
    from blipcap.testing import make_random_checkpoint

    path = CACHE / f"{shape}-s{seed}-st"
    if not (path / "config.json").exists():
        tmp = CACHE / f".{path.name}.tmp{os.getpid()}"
        make_random_checkpoint(tmp, shape, seed=seed)
        tmp.rename(path)
    return path


def synthetic_images(n: int, width: int = 640, height: int = 480, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)) for _ in range(n)
    ]


def machine() -> dict:
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info["cpu"] = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in lscpu.splitlines()
                if ln.startswith("Model name")
            ),
            "",
        )
        flags = next((ln for ln in lscpu.splitlines() if ln.startswith("Flags")), "")
        info["isa"] = [
            f
            for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
            if f in flags.split()
        ]
    except OSError:
        pass
    for lib in ("torch", "transformers", "onnxruntime", "numpy"):
        try:
            info[lib] = __import__(lib).__version__
        except ImportError:
            pass
    return info


def run_worker(script: Path, args: list[str]) -> dict:
    """Run one configuration in a fresh process (so peak RSS is that configuration's alone)."""
    proc = subprocess.run(
        [sys.executable, str(script), "--worker", *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
