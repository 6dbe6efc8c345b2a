"""benchmarks/gpu.py runs end to end in --smoke mode on any machine and writes no results file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import load_benchmark

pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_mode_runs_every_stage_and_writes_nothing(tiny_checkpoint, capsys):
    bench = load_benchmark("gpu")
    results = ROOT / "benchmarks" / "results"
    before = sorted(results.glob("gpu-*.json")) if results.exists() else []
    result = bench.main(["--smoke"])
    after = sorted(results.glob("gpu-*.json")) if results.exists() else []
    assert after == before  # smoke mode never writes (or overwrites) a results file
    assert (
        result["smoke"] is True and result["checkpoint_shape"] == "tiny" and result["images"] == 12
    )
    for key in ("images_per_second", "beam3_images_per_second", "baseline_images_per_second",
                "pipeline_baseline_images_per_second"):  # fmt: skip
        assert result[key] > 0, key
    runs = result["runs"]
    assert set(runs["decode_steps"]) == {"graphs", "eager"}
    assert runs["decode_steps"]["graphs"]["effective_mode"] == "eager"  # no CUDA: graphs fall back
    cos = result["logit_cosine_to_float32"]["bfloat16"]
    assert 0.99 < cos["min"] <= cos["mean"] <= 1.0
    assert set(result["versions"]) >= {"blipcap", "torch", "transformers", "numpy"}
    assert '"images_per_second"' in capsys.readouterr().out


def test_refuses_to_measure_a_gpu_it_does_not_have():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exc:
        load_benchmark("gpu").main([])
    assert exc.value.code == 2


def test_device_names_become_file_names():
    bench = load_benchmark("gpu")
    assert bench.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert bench.slug("NVIDIA H200") == "nvidia-h200"
