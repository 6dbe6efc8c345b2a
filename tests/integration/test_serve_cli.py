"""``blipcap serve`` as a process: a model that cannot be loaded ends it with one message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")


def test_a_model_that_cannot_be_loaded_is_reported_once_and_exits_3():
    missing = "/nonexistent/blip-model"
    p = subprocess.run(
        [sys.executable, "-c", "from blipcap.cli import main; main()", "serve", "--port", "0"],
        env={**os.environ, "BLIPCAP_MODEL": missing},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 3, p.stderr
    assert p.stderr.count(f"Model directory '{missing}' does not exist") == 1, p.stderr
    assert p.stderr.rstrip().endswith("blipcap: stopped: the model could not be loaded (see above)")
