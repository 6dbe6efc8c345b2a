"""Cold start of the ``blipcap`` command: ``--help``, and one image captioned with a tiny model.

Each figure is the median wall time of fresh processes (nothing shared between runs but
the operating system's file cache), with the first, cold-cache run left out. The model is
the tiny random checkpoint of the test suite, so the captioning figure is start-up (imports,
model load) rather than the model's speed.

    python benchmarks/cold_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import random_checkpoint

CLI = [sys.executable, "-c", "from blipcap.cli import main; main()"]


def wall_time(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - t0


def median_time(args: list[str], runs: int) -> float:
    wall_time(args)  # warms the file cache
    return statistics.median(wall_time(args) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    model = random_checkpoint("tiny", seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        from PIL import Image

        image = Path(tmp) / "one.jpg"
        Image.new("RGB", (640, 480), "teal").save(image)
        caption = [*CLI, "caption", str(image), "--model", str(model), "--device", "cpu"]
        figures = {
            "python_s": median_time([sys.executable, "-c", "pass"], runs),
            "help_s": median_time([*CLI, "--help"], runs),
            "caption_one_image_s": median_time(caption, runs),
            "runs": runs,
        }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
