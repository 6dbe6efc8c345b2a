"""The hostile scenario of benchmarks/server.py: its summaries, without a server."""

from __future__ import annotations

import os

from tests.conftest import load_benchmark

bench = load_benchmark("server")


def test_window_rates_count_answers_per_second_in_each_window():
    rates = bench.window_rates([0.1, 0.2, 0.6, 1.4], start=0.0, end=1.5, width=0.5)
    assert rates == [4.0, 2.0, 2.0]


def test_recovery_is_the_end_of_the_last_window_below_90_percent_of_idle():
    assert bench.recovery_seconds([10, 10], idle_rate=10, width=0.5) == 0.0
    assert bench.recovery_seconds([2, 5, 9.5, 3, 10, 10], idle_rate=10, width=0.5) == 2.0
    assert bench.recovery_seconds([10, 2], idle_rate=10, width=0.5) is None


def test_error_types_of_a_batch_and_of_a_whole_request():
    batch = {"results": [{"error": None}, {"error": {"type": "ImageTooLargeError"}}]}
    assert bench.error_types(batch) == ["ImageTooLargeError"]
    assert bench.error_types({"detail": "x.jpg: too many scans"}) == ["too many scans"]


def test_rss_of_this_process_is_read():
    assert bench.rss_bytes(os.getpid()) > 1_000_000


def test_goals_and_markdown_of_a_report():
    report = {
        "singles": [{"image": "a.jpg", "attack": "time", "mb": 0.3, "status": 413, "s": 0.2,
                     "errors": ["ImageTooLargeError"]}],
        "slowest_single_s": 0.2,
        "batch": {"status": 200, "s": 3.0, "baseline_mb": 300, "peak_mb": 900,
                  "limit_mb": 2348, "within_budget": True},
        "recovery": {"idle_per_s": 20.0, "burst": {"images_each": 4, "statuses": [200],
                     "answered_after_s": 4.0}, "recovery_s": None},
        "decode_budget_mb": 2048,
    }  # fmt: skip
    goals = bench.hostile_goals(report)
    assert (
        goals["every single image within 5 s"] and goals["peak RSS within baseline + decode budget"]
    )
    assert not goals["throughput back to 90 % within 5 s of the burst"]
    text = bench.hostile_markdown(report)
    assert "| a.jpg | time | 0.3 | 413 | 0.2 | ImageTooLargeError |" in text
    assert "throughput back to 90 % within 5 s of the burst: NOT met" in text
    report["recovery"]["recovery_s"] = 7.5  # 3.5 s after the burst's last answer
    assert bench.hostile_goals(report)["throughput back to 90 % within 5 s of the burst"]
