"""benchmarks/cpu.py: paired rounds, ratios taken within a round, and an end-to-end run on the tiny shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_benchmark

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]


def _round(base: float, onnx: float, others: float = 0.0) -> dict:
    def run(seconds):
        return {"seconds": seconds, "vision_seconds": seconds * 0.75, "cpu_seconds": 2 * seconds}

    return {
        "runs": {"transformers": run(base), "onnx-int8": run(onnx)},
        "others_cores": others,
        "probe_gflops": 200.0,
    }


def test_ratios_are_taken_within_each_round():
    bench = load_benchmark("cpu")
    # The machine slows down 2x between rounds; within each round onnx is 4x faster.
    rounds = [_round(4.0, 1.0), _round(8.0, 2.0, others=0.1), _round(6.0, 1.5)]
    ready = {"transformers": {"cold_start_seconds": 8.0}, "onnx-int8": {"cold_start_seconds": 2.0}}
    peaks = {"transformers": 2000.0, "onnx-int8": 600.0}
    base, onnx = bench.summarize(["transformers", "onnx-int8"], rounds, ready, peaks, batch=1)
    assert onnx["round_ratios"] == [4.0, 4.0, 4.0] and onnx["speed_ratio"] == 4.0
    # Pooling the times instead would mix fast and slow phases: medians 6.0 s and 1.5 s.
    assert onnx["images_per_second"] == pytest.approx(1 / 1.5)
    assert base["speed_ratio"] == 1.0
    assert onnx["rss_ratio"] == pytest.approx(0.3)
    assert onnx["vision_seconds_per_batch"] == pytest.approx(1.125)
    assert onnx["other_seconds_per_batch"] == pytest.approx(0.375)
    assert onnx["others_cores"] == 0.1 and onnx["cold_start_seconds"] == 2.0


def test_a_median_of_ratios_is_not_fooled_by_one_bad_round():
    bench = load_benchmark("cpu")
    rounds = [_round(4.0, 1.0), _round(4.0, 4.0), _round(4.0, 0.8)]  # round 2: onnx stalled
    ready = {i: {"cold_start_seconds": 1.0} for i in ("transformers", "onnx-int8")}
    peaks = {"transformers": 1.0, "onnx-int8": 1.0}
    _, onnx = bench.summarize(["transformers", "onnx-int8"], rounds, ready, peaks, batch=1)
    assert onnx["speed_ratio"] == 4.0 and onnx["round_ratios"] == [4.0, 1.0, 5.0]


@pytest.mark.slow
def test_end_to_end_on_the_tiny_shape(tmp_path):
    out = tmp_path / "cpu.json"
    proc = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "cpu.py"), "--shape", "tiny",
            "--impls", "transformers", "onnx-int8", "--modes", "greedy", "--batches", "2",
            "--rounds", "2", "--attempts", "1", "--max-wait", "5", "--out", str(out),
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["method"] == "paired rounds" and result["rounds"] == 2
    rows = {r["impl"]: r for r in result["results"]}
    assert set(rows) == {"transformers", "onnx-int8"}
    for row in rows.values():
        assert row["batch"] == 2 and row["shape"] == "tiny" and len(row["all_seconds"]) == 2
        assert row["images_per_second"] > 0 and row["peak_rss_mib"] > 50
        assert row["cold_start_seconds"] > 0 and row["vision_seconds_per_batch"] > 0
    assert rows["transformers"]["speed_ratio"] == 1.0
    assert len(rows["onnx-int8"]["round_ratios"]) == 2 and rows["onnx-int8"]["speed_ratio"] > 0
    table = out.with_suffix(".md").read_text()
    assert "2 paired round(s)" in table and "| greedy | 2 | onnx-int8 |" in table
