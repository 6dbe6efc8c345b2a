"""Shared fixtures: random-weight BLIP checkpoints in the exact Hugging Face layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.ci_required import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the model hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# PyTorch's OpenMP threads spin while they wait for work. When other processes keep the
# cores busy, the spinning threads take turns with the ones doing the work: a tiny model's
# 8 captions took 15-23 s instead of 0.7 s with both cores loaded. Waiting threads that
# sleep keep the suite's time near its quiet time on a busy machine. Set before torch is
# first imported (libgomp reads it once); subprocesses (CLI tests, benchmarks) inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_CACHE = Path(
    os.environ.get("BLIPCAP_TEST_CACHE", Path(__file__).parent.parent / ".cache" / "checkpoints")
)


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    import importlib.util
    import sys

    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(benchmarks))  # for their shared ``_common``
    spec = importlib.util.spec_from_file_location(f"bench_{name}", benchmarks / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def checkpoint(shape: str, seed: int = 0, safetensors: bool = True) -> Path:
    """Build (once, cached on disk) a random checkpoint of ``shape`` and return its directory."""
    from blipcap.testing import make_random_checkpoint

    name = f"{shape}-s{seed}-{'st' if safetensors else 'bin'}"
    path = _CACHE / name
    if not (path / "config.json").exists():
        tmp = _CACHE / f".{name}.tmp{os.getpid()}"
        make_random_checkpoint(tmp, shape, seed=seed, safetensors=safetensors)
        tmp.rename(path) if not path.exists() else None
    return path


def sample_photos():
    """Three real photographs (shipped by scikit-image) and two generated images.

    The generated ones are a gradient and shapes on noise. On the tiny
    checkpoint (seed 0) the coco prompt is continued by a WordPiece piece
    (``##...``) for the first and the last image.
    """
    import numpy as np
    from PIL import Image, ImageDraw
    from skimage import data as skdata

    real = [
        Image.fromarray(skdata.astronaut()),
        Image.fromarray(skdata.coffee()),
        Image.fromarray(skdata.chelsea()),
    ]
    y, x = np.mgrid[0:240, 0:320]
    gradient = np.stack([x * 255 // 319, y * 255 // 239, (x + y) * 255 // 558], axis=-1)
    rng = np.random.default_rng(7)
    noise = Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(noise)
    draw.ellipse((20, 30, 150, 200), fill=(250, 40, 40))
    draw.rectangle((60, 180, 190, 290), fill=(20, 20, 230))
    return real + [Image.fromarray(gradient.astype(np.uint8)), noise]


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """A tiny random BLIP (64 px images, 2+2 layers): seconds to build and run."""
    return checkpoint("tiny")


@pytest.fixture(scope="session")
def small_checkpoint() -> Path:
    return checkpoint("small", seed=1)


_TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier, named by its folder: ``-m unit``, ``-m "not e2e"``."""
    root = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(root).parts if item.path.is_relative_to(root) else ()
        if parts and parts[0] in _TIERS:
            item.add_marker(parts[0])


def itm_checkpoint(shape: str, seed: int = 0) -> Path:
    """Like :func:`checkpoint`, for a random image-text matching (BlipForImageTextRetrieval) one."""
    from blipcap.testing import make_random_itm_checkpoint

    name = f"itm-{shape}-s{seed}-st"
    path = _CACHE / name
    if not (path / "config.json").exists():
        tmp = _CACHE / f".{name}.tmp{os.getpid()}"
        make_random_itm_checkpoint(tmp, shape, seed=seed)
        tmp.rename(path) if not path.exists() else None
    return path


@pytest.fixture(scope="session")
def tiny_itm_checkpoint() -> Path:
    """A tiny random image-text matching model (64 px images, 2+2 layers) for --rerank itm."""
    return itm_checkpoint("tiny")
