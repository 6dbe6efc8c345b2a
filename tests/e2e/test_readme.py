"""The README's Python examples run as written (BLIPCAP_MODEL points at a random test checkpoint)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_examples_run(tiny_checkpoint, tmp_path):
    blocks = python_blocks()
    assert blocks, "the README should show Python usage"
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photos / "cat.jpg")
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photos / "dog.png")
    env = {"BLIPCAP_MODEL": str(tiny_checkpoint), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    for code in blocks:
        p = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, timeout=300
        )
        assert p.returncode == 0, f"README example failed:\n{code}\n{p.stderr.decode()[-2000:]}"
