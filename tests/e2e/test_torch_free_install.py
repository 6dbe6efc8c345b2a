"""blipcap[onnx] in a fresh virtual environment: no torch installed, and it captions.

The export is made here (it needs torch); the fresh environment only runs it,
through the installed ``blipcap`` console script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd, **kwargs):
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, **kwargs)


@pytest.mark.slow
def test_onnx_extra_installs_and_captions_without_torch(tiny_checkpoint, tmp_path):
    from blipcap import Captioner
    from blipcap.export import export_onnx

    export = tmp_path / "tiny-onnx"
    export_onnx(str(tiny_checkpoint), export, verify_images=1, quiet=True)
    image = tmp_path / "photo.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    expected = Captioner(str(tiny_checkpoint), backend="torch", device="cpu").caption([image])[0]

    venv = tmp_path / "venv"
    # A plain venv: nothing from this interpreter's site-packages is visible.
    made = _run([sys.executable, "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    installed = _run([str(python), "-m", "pip", "install", "--quiet", f"{ROOT}[onnx]"])
    assert installed.returncode == 0, installed.stdout + installed.stderr

    no_torch = _run([str(python), "-c", "import torch"])
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    listed = _run([str(python), "-m", "pip", "list", "--format=json"])
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "onnxruntime" in names and "blipcap" in names
    assert not names & {"torch", "transformers", "onnx"}, names

    p = _run(
        [
            str(bin_dir / "blipcap"),
            "caption",
            "--model",
            str(export),
            str(image),
            "--format",
            "jsonl",
        ],
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    (record,) = [json.loads(line) for line in p.stdout.splitlines()]
    assert record["backend"] == "onnx" and record["dtype"] == "float32"
    assert record["error"] is None and record["random_weights"] is True
    assert record["caption"] == expected.caption
