"""``blipcap bench`` on a tiny random checkpoint produces its tables within a bounded time."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from blipcap.cli import main

pytestmark = pytest.mark.slow


def _bench(tiny_checkpoint, *args: str):
    base = ["bench", "--model", str(tiny_checkpoint), "--backend", "torch", "--device", "cpu"]
    return CliRunner().invoke(main, [*base, *args], catch_exceptions=False)


def test_in_process_sweep_writes_markdown_and_json(tiny_checkpoint, tmp_path):
    t0 = time.monotonic()
    result = _bench(
        tiny_checkpoint,
        "--batch-sizes", "1,2", "--beams", "1,2", "--lengths", "3", "--batches", "1",
        "--image-size", "32x24", "--no-isolate", "--max-time", "120", "--out", str(tmp_path / "t"),
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert result.exit_code == 0, result.output
    # A bound on the run (the budget plus start-up), not a speed claim.
    assert elapsed < 180

    doc = json.loads((tmp_path / "t.json").read_text())
    rows = [
        (m["batch_size"], m["num_beams"], m["length"], m["status"]) for m in doc["measurements"]
    ]
    assert rows == [(1, 1, 3, "ok"), (2, 1, 3, "ok"), (1, 2, 3, "ok"), (2, 2, 3, "ok")]
    for m in doc["measurements"]:
        assert m["images"] == m["batch_size"]  # one timed batch
        assert m["images_per_s"] == pytest.approx(m["images"] / m["seconds"])
        assert m["memory_method"] == "rss_sampled"
        assert m["peak_memory_bytes"] >= m["baseline_memory_bytes"] > 0
    assert doc["provenance"]["random_weights"] is True
    assert doc["provenance"]["model"] == str(tiny_checkpoint)
    assert doc["hardware"]["cpu_count"] >= 1

    markdown = (tmp_path / "t.md").read_text()
    assert result.stdout.strip() == markdown.strip()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert table[0] == "| batch | beams | new tokens | images/s | s/image | peak memory | status |"
    assert [line.split(" | ")[:3] for line in table[1:]] == [
        ["| 1", "1", "3"],
        ["| 2", "1", "3"],
        ["| 1", "2", "3"],
        ["| 2", "2", "3"],
    ]
    assert all(line.endswith("| ok |") for line in table[1:])
    assert "- weights: random (a test checkpoint)" in markdown


def test_isolated_configuration_reports_the_process_high_water_mark(tiny_checkpoint):
    result = _bench(
        tiny_checkpoint,
        "--batch-sizes", "2", "--beams", "1", "--lengths", "2", "--batches", "1",
        "--image-size", "32x24", "--isolate", "--max-time", "300", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (m,) = doc["measurements"]
    assert m["status"] == "ok", m
    assert m["memory_method"] == "rss_high_water_fresh_process"
    # The high-water mark includes loading torch and the model: above the loaded baseline.
    assert m["peak_memory_bytes"] >= m["baseline_memory_bytes"] > 50 * 2**20
    assert doc["provenance"]["backend"] == "torch"
