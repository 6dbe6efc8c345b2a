"""Confidence and the degeneration guard on a real (tiny, random-weight) checkpoint, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from blipcap import Captioner
from blipcap.cli import main
from blipcap.guard import detect


def images(n: int = 6):
    rng = np.random.default_rng(7)
    return [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def cap(tiny_checkpoint):
    return Captioner(str(tiny_checkpoint), backend="torch", device="cpu")


def test_the_guard_redecodes_exactly_the_degenerate_captions(cap):
    pics = images()
    raw = cap.caption(pics, guard=False, clean_artifacts=False)
    flagged = [bool(detect(r.caption)) for r in raw]
    assert any(flagged), "random weights loop: the test needs at least one degenerate caption"
    plain = cap.caption(pics, guard=False)
    guarded = cap.caption(pics)  # the default preset: guard on
    for was_flagged, before, after in zip(flagged, plain, guarded, strict=True):
        if was_flagged:
            assert after.guard is not None and after.guard.detected
            assert after.to_record()["guard"] == after.guard.to_dict()
        else:  # untouched: same caption, same confidence, no mark
            assert after.guard is None and "guard" not in after.to_record()
            assert (after.caption, after.confidence) == (before.caption, before.confidence)
        assert 0.0 < after.confidence.score <= 1.0 and after.confidence.tokens >= 1


def test_confidence_for_every_caption_of_beam_search_and_sampling(cap):
    pics = images(2)
    for options in (
        dict(num_beams=3, num_captions=3),
        dict(do_sample=True, num_captions=2, seed=1),
    ):
        for r in cap.caption(pics, max_new_tokens=8, **options):
            rec = r.to_record()
            assert len(rec["confidences"]) == len(rec["captions"]) == options["num_captions"]
            assert rec["confidence"] == rec["confidences"][0]
            assert all(c["min_logprob"] <= c["mean_logprob"] < 0 for c in rec["confidences"])


def test_server_record_schema_accepts_the_new_fields(cap):
    schemas = pytest.importorskip("blipcap.server.schemas")
    for r in cap.caption(images(3)):
        schemas.CaptionRecord.model_validate(r.to_record())
    assert schemas.OptionsIn(guard=False).guard is False


def run_cli(tiny_checkpoint, tmp_path, *flags):
    for i, im in enumerate(images()):
        im.save(tmp_path / f"{i}.png")
    result = CliRunner().invoke(
        main,
        ["caption", str(tmp_path), "--model", str(tiny_checkpoint), *flags],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_cli_guard_flags(tiny_checkpoint, tmp_path):
    on = run_cli(tiny_checkpoint, tmp_path)
    off = run_cli(tiny_checkpoint, tmp_path, "--no-guard")
    coco = run_cli(tiny_checkpoint, tmp_path, "--preset", "coco")
    forced = run_cli(tiny_checkpoint, tmp_path, "--preset", "coco", "--guard")
    assert all(r["options"]["guard"] for r in on) and any("guard" in r for r in on)
    assert not any(r["options"]["guard"] or "guard" in r for r in off + coco)
    assert all(r["options"]["guard"] for r in forced)
    assert all(0 < r["confidence"]["score"] <= 1 for r in on + off + coco + forced)
