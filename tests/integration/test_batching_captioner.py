"""Memory-sized batches and out-of-memory back-off on a real (tiny) captioner."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from blipcap import batching

MiB = 1 << 20


SMALL_BUDGET = """
import sys
import numpy as np
from blipcap import Captioner, batching
from blipcap.options import CaptionOptions

MiB = 1 << 20
cap = Captioner(sys.argv[1], backend="torch", device="cpu")
real = cap.generate_tokens
sizes = []


def heavy(pixels, options):
    sizes.append(len(pixels))
    ballast = np.ones(len(pixels) * 30 * MiB // 8)
    out = real(pixels, options)
    del ballast
    return out


cap.generate_tokens = heavy
# An estimate too big for 8 images in 100 MiB: the planner measures instead.
batching.estimate_per_image = lambda *a, **k: {"total": 20 * MiB}
options = CaptionOptions(max_new_tokens=5)
print(cap.batch_size_for(options, "auto"), sizes)
import os
os.environ[batching.BUDGET_ENV] = "10GiB"
print(cap.batch_size_for(options, "auto") == batching.CPU_CAP)
"""


def test_auto_batch_size_on_a_simulated_small_budget(tiny_checkpoint, tmp_path):
    """A real captioner whose model call costs 30 MiB per image more than it does: budget 100 MiB -> 3.

    In a fresh process: the calibration measures the process's resident memory, which
    the tests run before it would have grown and fragmented.
    """
    env = {**os.environ, "BLIPCAP_CACHE_DIR": str(tmp_path), batching.BUDGET_ENV: "100MiB"}
    p = subprocess.run(
        [sys.executable, "-c", SMALL_BUDGET, str(tiny_checkpoint)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    # 3 images fit; [1, 2] are the calibration runs; a big budget gives the CPU cap.
    assert p.stdout.splitlines() == ["3 [1, 2]", "True"]


def test_captioner_oom_backoff_results_complete_and_in_order(tiny_checkpoint, monkeypatch):
    """Inject OOM for batches over 2 images: every image still gets its own caption, in order."""
    from PIL import Image

    from blipcap import Captioner

    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((40, 50, 3)) * 255).astype("uint8")) for _ in range(7)]
    images.insert(3, b"not an image")  # an input error in the middle stays in place
    cap = Captioner(str(tiny_checkpoint), backend="torch", device="cpu")
    expected = [r.caption for r in cap.caption(images, batch_size=1, max_new_tokens=6)]
    assert expected[3] is None and all(c for i, c in enumerate(expected) if i != 3)

    real = cap.generate_tokens
    sizes = []

    def flaky(pixels, options):
        sizes.append(len(pixels))
        if len(pixels) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB (simulated)")
        return real(pixels, options)

    monkeypatch.setattr(cap, "generate_tokens", flaky)
    got = cap.caption(images, batch_size=8, max_new_tokens=6)
    assert [r.caption for r in got] == expected
    assert got[3].error.type == "UnsupportedFormatError"
    # 7 good images: 7 fails -> 4 fails -> 2, 2, then 3 fails -> 2, 1
    assert sizes == [7, 4, 2, 2, 3, 2, 1]

    # An image that cannot fit even alone: an item error, the others are captioned.
    def hopeless(pixels, options):
        if any(float(p.sum()) == float(bad.sum()) for p in pixels):
            raise MemoryError("simulated")
        return real(pixels, options)

    bad = cap.load(images[5])
    monkeypatch.setattr(cap, "generate_tokens", hopeless)
    got = cap.caption(images, batch_size=4, max_new_tokens=6)
    assert [r.caption for i, r in enumerate(got) if i != 5] == [
        c for i, c in enumerate(expected) if i != 5
    ]
    assert got[5].caption is None and got[5].error.type == "OutOfMemoryError"
