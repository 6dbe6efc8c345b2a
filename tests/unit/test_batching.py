"""Batches sized to memory: the memory model, budgets, calibration, and out-of-memory back-off."""

from __future__ import annotations

import numpy as np
import pytest

from blipcap import batching
from blipcap.batching import (
    BatchSizer,
    MemoryModel,
    calibrate,
    estimate_per_image,
    parse_bytes,
    plan_batch_size,
    run_with_backoff,
)
from blipcap.errors import OptionsError, OutOfMemoryError
from blipcap.memory import PeakMeter, is_out_of_memory
from blipcap.model.config import BlipConfig, TextConfig, VisionConfig

MiB = 1 << 20
LARGE = BlipConfig(
    VisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16
    ),
    TextConfig(num_attention_heads=12),
)


def test_parse_bytes():
    assert parse_bytes("1024") == 1024
    assert parse_bytes("2GiB") == 2 << 30
    assert parse_bytes("512M") == 512 << 20
    assert parse_bytes("1.5g") == 3 << 29
    with pytest.raises(OptionsError, match="2GiB"):
        parse_bytes("lots")


def test_estimate_large_shape_parts():
    # BLIP-large, fp32, greedy, 21 positions: the numbers the docs' table is built from.
    parts = estimate_per_image(LARGE, rows=1, length=21, act_bytes=4)
    assert parts["cross_kv"] == 12 * 2 * 577 * 768 * 4  # 40.6 MiB, the research figure
    assert parts["self_cache"] == 12 * 2 * 1 * 21 * 768 * 4
    assert parts["vision"] == 577 * (2 * 1024 + 2 * 4096) * 4
    assert parts["scores"] == 30524 * 40
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total")
    # ONNX Runtime materializes the vision attention scores and grows its cache copies.
    onnx = estimate_per_image(LARGE, rows=1, length=21, act_bytes=4, backend="onnx")
    assert onnx["vision"] - parts["vision"] == 2 * 16 * 577 * 577 * 4
    assert onnx["self_cache"] == 6 * parts["self_cache"]
    # Beams add cache and scores but share the image's keys/values.
    beam = estimate_per_image(LARGE, rows=3, length=21, act_bytes=4)
    assert beam["cross_kv"] == parts["cross_kv"]
    assert beam["self_cache"] == 3 * parts["self_cache"]
    # Half-precision activations halve the tensors (scores stay float32).
    half = estimate_per_image(LARGE, rows=1, length=21, act_bytes=2)
    assert half["cross_kv"] * 2 == parts["cross_kv"] and half["scores"] == parts["scores"]


def test_memory_model_max_batch():
    model = MemoryModel(base_bytes=1000 * MiB, per_image_bytes=100 * MiB, source="measured")
    assert model.peak(4) == 1400 * MiB
    assert model.max_batch(350 * MiB, cap=8) == 3
    assert model.max_batch(50 * MiB, cap=8) == 1  # never below 1: back-off handles the rest
    assert model.max_batch(10_000 * MiB, cap=8) == 8


def test_plan_skips_measuring_when_memory_is_ample():
    def never():
        raise AssertionError("must not calibrate")

    size, model, budget = plan_batch_size(10 * MiB, "cpu", never, budget_bytes=1 << 40)
    assert size == batching.CPU_CAP and model.source == "estimated" and budget == 1 << 40
    size, _, _ = plan_batch_size(10 * MiB, "cuda", never, budget_bytes=1 << 40)
    assert size == batching.GPU_CAP


def test_plan_on_a_small_budget_uses_the_measurement():
    measured = MemoryModel(base_bytes=500 * MiB, per_image_bytes=60 * MiB, source="measured")
    size, model, _ = plan_batch_size(50 * MiB, "cpu", lambda: measured, budget_bytes=200 * MiB)
    assert (size, model) == (3, measured)


def test_budget_from_environment(monkeypatch):
    monkeypatch.setenv(batching.BUDGET_ENV, "300MiB")
    assert batching.memory_budget("cpu") == 300 * MiB
    monkeypatch.delenv(batching.BUDGET_ENV)
    ram = batching.available_ram()
    assert ram is not None and ram > 0
    assert (
        batching.memory_budget("cpu") == int(ram * 0.85)
        or abs(batching.memory_budget("cpu") - ram * 0.85) < 64 * MiB
    )  # RAM moves a little between the two reads


def test_peak_meter_sees_a_transient_allocation():
    with PeakMeter("cpu") as small:
        pass
    with PeakMeter("cpu") as big:
        block = np.ones(80 * MiB // 8)  # touched: resident
        del block
    assert big.peak - small.peak > 60 * MiB


def test_calibrate_measures_the_per_image_slope(tmp_path, monkeypatch):
    """A fake model that allocates exactly 40 MiB per image: calibration must find ~40 MiB."""
    monkeypatch.setenv("BLIPCAP_CACHE_DIR", str(tmp_path))
    batching._CALIBRATED.clear()
    calls = []

    def run(batch):
        calls.append(batch)
        block = np.ones(batch * 40 * MiB // 8)
        return float(block[-1])

    key = {"model": "fake", "rows": 1}
    model = calibrate(run, "cpu", key)
    assert calls == [1, 2]
    assert model.source == "measured"
    assert 34 * MiB < model.per_image_bytes < 46 * MiB
    # Cached: in this process, then on disk for the next one.
    assert calibrate(run, "cpu", key) == model and calls == [1, 2]
    batching._CALIBRATED.clear()
    assert calibrate(run, "cpu", key) == model and calls == [1, 2]
    assert len(list((tmp_path / "memory").glob("*.json"))) == 1


def test_is_out_of_memory():
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not an allocation failure type
    assert not is_out_of_memory(OutOfMemoryError("ours, already final"))


def test_backoff_halves_and_keeps_order():
    tried = []

    def run(items):
        tried.append(len(items))
        if len(items) > 2:
            raise MemoryError("simulated")
        return [x * 10 for x in items]

    shrinks = []
    out = run_with_backoff(run, list(range(7)), on_shrink=shrinks.append)
    assert out == [0, 10, 20, 30, 40, 50, 60]
    assert tried == [7, 4, 2, 2, 3, 2, 1]
    assert shrinks == [4, 2, 2]


def test_backoff_single_item_becomes_an_item_error():
    def run(items):
        if 3 in items:
            raise RuntimeError("CUDA out of memory")
        return [x for x in items]

    out = run_with_backoff(run, [1, 2, 3, 4])
    assert out[:2] == [1, 2] and out[3] == 4
    assert isinstance(out[2], OutOfMemoryError) and "alone" in str(out[2])


def test_backoff_other_errors_propagate():
    def run(items):
        raise ValueError("a bug, not memory")

    with pytest.raises(ValueError, match="a bug"):
        run_with_backoff(run, [1, 2])


def test_batch_sizer_only_shrinks():
    s = BatchSizer(8)
    s.shrink(4)
    s.shrink(6)
    assert s.size == 4
    s.shrink(0)
    assert s.size == 1
