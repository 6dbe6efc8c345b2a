"""Golden-caption drift and run-to-run agreement, on runs and through the CLI with a fake captioner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from blipcap.cli import main
from blipcap.errors import EvaluationError
from blipcap.evaluation.agreement import compare_runs
from blipcap.evaluation.golden import compare_golden
from blipcap.evaluation.runs import Run, RunItem, read_run
from blipcap.options import CaptionOptions, resolve_options
from tests.fakes import CaptionTable, FakeCaptioner, register

TABLE = {"a.jpg": "a red apple on a table", "b.jpg": "a blue car on a street", "c.jpg": "two dogs"}


def _write_golden(
    path: Path, cap: FakeCaptioner, names: list[str], options: CaptionOptions
) -> None:
    with open(path, "w") as f:
        for r in cap.caption_iter([f"imgs/{n}" for n in names], options=options):
            f.write(json.dumps(r.to_record()) + "\n")


@pytest.fixture
def fake(monkeypatch):
    cap = FakeCaptioner(CaptionTable(TABLE), revision="r1")
    register(monkeypatch, cap)
    return cap


def _run(*args: str):
    return CliRunner().invoke(main, ["eval", *args], catch_exceptions=False)


def test_golden_passes_then_fails_on_one_changed_caption(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = resolve_options(preset="coco")
    _write_golden(tmp_path / "golden.jsonl", fake, ["a.jpg", "b.jpg", "c.jpg"], options)

    ok = _run("--golden", "golden.jsonl")
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip() == "golden golden.jsonl: 3 of 3 identical"
    # Re-run with the golden file's own options and paths, not a preset.
    paths, used = fake.calls[-1]
    assert paths == ["imgs/a.jpg", "imgs/b.jpg", "imgs/c.jpg"]
    assert used == options

    fake.describe["b.jpg"] = "a blue car parked on a street"
    drift = _run("--golden", "golden.jsonl")
    assert drift.exit_code == 1
    assert drift.output.splitlines() == [
        "golden golden.jsonl: 2 of 3 identical, 1 drifted, 0 missing",
        "DRIFT imgs/b.jpg",
        "  golden: 'a blue car on a street'",
        "  now:    'a blue car parked on a street'",
    ]


def test_golden_json_report_and_provenance_note(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_golden(tmp_path / "golden.jsonl", fake, ["a.jpg", "b.jpg"], CaptionOptions())
    fake.revision = "r2"
    fake.describe.pop("a.jpg")  # now unreadable: an error where the golden run had a caption
    result = _run("--golden", "golden.jsonl", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert doc["ok"] is False
    assert (doc["total"], doc["identical"]) == (2, 1)
    assert doc["drift"] == [
        {
            "path": "imgs/a.jpg",
            "expected": ["a red apple on a table"],
            "actual": None,
            "expected_error": None,
            "actual_error": "CorruptImageError",
        }
    ]
    assert doc["provenance_changes"] == {"revision": {"golden": "r1", "now": "r2"}}


def test_golden_against_a_stored_run_without_a_model(tmp_path, fake):
    _write_golden(tmp_path / "golden.jsonl", fake, ["a.jpg", "b.jpg"], CaptionOptions())
    _write_golden(
        tmp_path / "new.jsonl", fake, ["b.jpg", "a.jpg"], CaptionOptions()
    )  # order is irrelevant
    assert (
        _run(
            "--golden", str(tmp_path / "golden.jsonl"), "--predictions", str(tmp_path / "new.jsonl")
        ).exit_code
        == 0
    )
    _write_golden(tmp_path / "short.jsonl", fake, ["a.jpg"], CaptionOptions())
    result = _run(
        "--golden", str(tmp_path / "golden.jsonl"), "--predictions", str(tmp_path / "short.jsonl")
    )
    assert result.exit_code == 1
    assert "MISSING imgs/b.jpg: no result in this run" in result.output
    assert fake.calls[-1][0] == ["imgs/a.jpg"]  # only the fixture writing ran the fake


def test_golden_refuses_decoding_flags(tmp_path, fake):
    _write_golden(tmp_path / "golden.jsonl", fake, ["a.jpg"], CaptionOptions())
    result = CliRunner().invoke(
        main, ["eval", "--golden", str(tmp_path / "golden.jsonl"), "--beams", "3"]
    )
    assert result.exit_code == 2
    assert "reuses the decoding options stored in the golden file" in result.output


@pytest.mark.parametrize(
    "args", [[], ["--golden", "g.jsonl", "--annotations", "a.json"]], ids=["none", "two"]
)
def test_exactly_one_mode(args):
    result = CliRunner().invoke(main, ["eval", *args])
    assert result.exit_code == 2
    assert "give exactly one of --annotations, --references-from or --golden" in result.output


def _run_of(source: str, items: dict[str, str | None]) -> Run:
    run = Run(source)
    for path, caption in items.items():
        if caption is None:
            run.add(RunItem(path, (), {"type": "CorruptImageError", "message": "bad"}))
        else:
            run.add(RunItem(path, (caption,)))
    return run


def test_compare_golden_exact_and_normalized_paths():
    golden = _run_of("g", {"./x/a.jpg": "cat", "x/b.jpg": None, "x/c.jpg": "dog"})
    now = _run_of("n", {"x/a.jpg": "cat", "x/b.jpg": None, "x/c.jpg": "dog "})
    report = compare_golden(golden, now)
    assert (report.total, report.identical) == (3, 2)  # the same error counts as no drift
    assert [d.path for d in report.drift] == ["x/c.jpg"]  # even trailing whitespace is drift
    assert not report.ok


def test_agreement_counts_identical_and_differences():
    ref = _run_of("fp32.jsonl", {"a.jpg": "a cat", "b.jpg": "a dog", "c.jpg": None, "d.jpg": "x"})
    cand = _run_of("int8.jsonl", {"a.jpg": "a cat", "b.jpg": "a puppy", "c.jpg": "c", "e.jpg": "y"})
    agreement, refs, cands = compare_runs(ref, cand)
    assert (agreement.compared, agreement.identical, agreement.identical_rate) == (2, 1, 0.5)
    assert agreement.differences == [
        {"path": "b.jpg", "reference": "a dog", "candidate": "a puppy"}
    ]
    assert agreement.only_in_reference == ["d.jpg"]
    assert agreement.only_in_candidate == ["e.jpg"]
    assert agreement.failed == [
        {
            "path": "c.jpg",
            "run": "reference",
            "error": {"type": "CorruptImageError", "message": "bad"},
        }
    ]
    assert refs == {"a.jpg": ["a cat"], "b.jpg": ["a dog"]}
    assert cands == {"a.jpg": "a cat", "b.jpg": "a puppy"}


def test_agreement_needs_common_images():
    with pytest.raises(EvaluationError, match="no image in common"):
        compare_runs(_run_of("r", {"a.jpg": "x"}), _run_of("c", {"b.jpg": "x"}))


def test_read_run_options_and_duplicates(tmp_path):
    path = tmp_path / "run.jsonl"
    opts = resolve_options(preset="coco").to_dict()
    lines = [
        {
            "path": "a.jpg",
            "caption": "x",
            "captions": ["x", "y"],
            "options": opts,
            "model": "m",
            "revision": "r",
        },
        {"path": "b.jpg", "caption": "z", "options": opts, "model": "m", "revision": "r"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    run = read_run(path)
    assert run.items["a.jpg"].captions == ("x", "y")
    assert run.caption_options() == resolve_options(preset="coco")
    assert run.provenance == {"model": "m", "revision": "r"}

    path.write_text(path.read_text() + json.dumps({"path": "./a.jpg", "caption": "w"}) + "\n")
    with pytest.raises(EvaluationError, match="'./a.jpg' appears twice"):
        read_run(path)


def test_mixed_options_are_refused(tmp_path):
    path = tmp_path / "run.jsonl"
    records = [
        {"path": "a.jpg", "caption": "x", "options": CaptionOptions().to_dict()},
        {"path": "b.jpg", "caption": "y", "options": CaptionOptions(num_beams=2).to_dict()},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(EvaluationError, match="2 different decoding options"):
        read_run(path).caption_options()
