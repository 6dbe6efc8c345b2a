"""The bench sweep on a fake captioner: throughput arithmetic, OOM handling, time budget, tables."""

from __future__ import annotations

import time

from blipcap import __version__
from blipcap.errors import OutOfMemoryError
from blipcap.evaluation.bench import (
    BenchSettings,
    Measurement,
    forced_length_options,
    measure,
    random_images,
    run_sweep,
)
from blipcap.evaluation.report import bench_markdown, format_bytes
from blipcap.options import CaptionOptions
from blipcap.results import Caption, Provenance


class SlowFake:
    """Takes ``per_image`` seconds per image; runs out of memory above ``max_items`` batch x beams."""

    random_weights = True

    def __init__(self, per_image: float = 0.0, max_items: int = 10**9):
        self.per_image = per_image
        self.max_items = max_items
        self.calls: list[tuple[int, int, CaptionOptions]] = []

    def provenance_for(self, options: CaptionOptions) -> Provenance:
        return Provenance("fake", None, "torch", "float32", "cpu", options.to_dict(), __version__)

    def caption(self, images, options=None, batch_size="auto", **kw):
        self.calls.append((len(images), batch_size, options))
        if batch_size * options.num_beams > self.max_items:
            raise OutOfMemoryError("ran out of memory even at batch size 1")
        time.sleep(self.per_image * len(images))
        return [Caption(None, "x", ["x"]) for _ in images]


def test_forced_length_options():
    o = forced_length_options(3, 17)
    assert (o.num_beams, o.min_new_tokens, o.max_new_tokens, o.prompt) == (3, 17, 17, None)


def test_measure_warms_up_then_times_the_images():
    fake = SlowFake(per_image=0.01)
    images = random_images(6, 32, 24)
    m = measure(fake, 2, 3, 5, images)
    # One warm-up batch of 2 images, then all 6 timed.
    assert [(n, b) for n, b, _ in fake.calls] == [(2, 2), (6, 2)]
    assert all(o == forced_length_options(3, 5) for _, _, o in fake.calls)
    assert m.status == "ok" and m.images == 6
    assert 0.06 <= m.seconds < 1.0
    assert m.images_per_s == 6 / m.seconds
    assert m.memory_method == "rss_sampled"
    assert m.peak_memory_bytes >= m.baseline_memory_bytes > 0


def test_random_images_are_distinct_and_sized():
    a, b = random_images(2, 40, 30, seed=1)
    assert a.size == (40, 30) and a.mode == "RGB"
    assert a.tobytes() != b.tobytes()
    assert random_images(1, 40, 30, seed=1)[0].tobytes() == a.tobytes()


def test_out_of_memory_is_a_result_and_larger_configs_are_skipped():
    fake = SlowFake(max_items=4)
    settings = BenchSettings(
        batch_sizes=(1, 2, 4), beams=(1, 3), lengths=(5,), batches=1, isolate=False
    )
    measurements, provenance = run_sweep(settings, captioner_factory=lambda: fake)
    got = [(m.batch_size, m.num_beams, m.status) for m in measurements]
    assert got == [
        (1, 1, "ok"),
        (2, 1, "ok"),
        (4, 1, "ok"),
        (1, 3, "ok"),
        (2, 3, "oom"),
        (4, 3, "skipped"),
    ]
    assert measurements[5].note == "skipped: batch 2 x beams 3 already ran out of memory"
    assert provenance["random_weights"] is True
    assert len(fake.calls) == 2 * 4 + 1  # warm-up + timed for each ok config, one failed warm-up


def test_time_budget_skips_the_rest():
    fake = SlowFake(per_image=0.1)
    settings = BenchSettings(
        batch_sizes=(1, 2, 3, 4), beams=(1,), lengths=(5,), batches=1, max_time_s=0.5, isolate=False
    )
    t0 = time.monotonic()
    measurements, _ = run_sweep(settings, captioner_factory=lambda: fake)
    assert time.monotonic() - t0 < 3.0
    statuses = [m.status for m in measurements]
    assert statuses[0] == "ok" and statuses[-1] == "skipped"
    assert len(measurements) == 4  # every configuration is reported, run or not
    assert measurements[-1].note == "skipped: the 0.5 s time budget was used up"


def _doc(measurements):
    return {
        "settings": {
            "batches": 2,
            "max_time_s": 60,
            "inputs_description": "random 640x480 RGB images",
        },
        "provenance": {
            "model": "m",
            "revision": "abc",
            "backend": "torch",
            "device": "cpu",
            "dtype": "float32",
        },
        "hardware": {
            "cpu": "Test CPU",
            "cpu_count": 2,
            "memory_bytes": 8 * 2**30,
            "platform": "Linux",
        },
        "libraries": {"blipcap": "0.1.0"},
        "seconds": 12.3,
        "measurements": [m.to_dict() for m in measurements],
    }


def test_bench_markdown_table():
    ok = Measurement(
        4,
        3,
        20,
        images=8,
        seconds=2.0,
        images_per_s=4.0,
        peak_memory_bytes=3 * 2**30,
        memory_method="rss_high_water_fresh_process",
    )
    oom = Measurement(8, 3, 20, status="oom", note="the process was killed | SIGKILL")
    text = bench_markdown(_doc([ok, oom]))
    lines = text.splitlines()
    assert lines[0] == "# blipcap bench"
    assert "- model: m (revision abc); backend torch, device cpu, dtype float32" in lines
    assert "- hardware: Test CPU (2 logical CPUs), 8 GiB RAM, Linux" in lines
    assert any(
        line.startswith("- peak memory: peak resident memory of a fresh process") for line in lines
    )
    assert lines[-3:] == [
        "|--:|--:|--:|--:|--:|--:|:--|",
        "| 4 | 3 | 20 | 4.00 | 0.250 | 3.00 GiB | ok |",
        "| 8 | 3 | 20 | - | - | - | oom: the process was killed / SIGKILL |",
    ]


def test_format_bytes():
    assert format_bytes(None) == "-"
    assert format_bytes(512 * 2**20) == "512 MiB"
    assert format_bytes(int(1.5 * 2**30)) == "1.50 GiB"


def test_out_of_memory_is_recognised_as_batching_recognises_it():
    """One classifier (blipcap.memory): C++ and CUDA allocation failures count as oom here too."""

    class Failing(SlowFake):
        def __init__(self, message: str):
            super().__init__()
            self.message = message

        def caption(self, images, options=None, batch_size="auto", **kw):
            raise RuntimeError(self.message)

    images = random_images(2, 16, 16)
    for message in ("std::bad_alloc", "CUDA error: cudaErrorMemoryAllocation"):
        assert measure(Failing(message), 1, 1, 2, images).status == "oom", message
    assert measure(Failing("shape mismatch"), 1, 1, 2, images).status == "error"
