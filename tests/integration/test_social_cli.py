"""`blipcap social` driven in-process with the tiny random checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from blipcap.captioner import get_captioner
from blipcap.cli import main
from blipcap.text import to_alt_text


@pytest.fixture()
def photos(tmp_path):
    rng = np.random.default_rng(3)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return tmp_path


pytestmark = pytest.mark.slow  # runs the (tiny) model


def run(*args):
    return CliRunner().invoke(main, ["social", *args], catch_exceptions=False)


def test_json_records_per_image_and_platform(photos, tiny_checkpoint):
    out = photos / "posts.json"
    r = run(
        str(photos / "a.png"), str(photos / "b.jpg"),
        "--platform", "x", "--platform", "mastodon", "--hashtags", "--attribution",
        "--model", str(tiny_checkpoint), "--format", "json", "--output", str(out),
        "--max-new-tokens", "6",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    records = json.loads(out.read_text())
    assert [(rec["path"].rsplit("/", 1)[-1], rec["platform"]) for rec in records] == [
        ("a.png", "x"),
        ("a.png", "mastodon"),
        ("b.jpg", "x"),
        ("b.jpg", "mastodon"),
    ]
    # The same shared instance the command used (same settings, same process).
    captions = get_captioner(str(tiny_checkpoint)).caption(
        [photos / "a.png", photos / "b.jpg"], max_new_tokens=6
    )
    for rec in records:
        caption = captions[0 if rec["path"].endswith("a.png") else 1].caption
        alt = to_alt_text(caption, 100_000)
        assert rec["alt_text"] == alt + " Machine-generated description."
        assert rec["text"].startswith(alt + "\n\n")
        assert rec["text"].endswith("\n\nMachine-generated description.")
        assert rec["text_length"] <= rec["text_limit"] and rec["random_weights"] is True
        assert rec["options"]["do_sample"] is False and rec["options"]["max_new_tokens"] == 6
    assert "RANDOM weights" in r.output  # the warning on stderr (mixed into output by CliRunner)


def test_plain_output_and_exit_1_on_a_bad_image(photos, tiny_checkpoint):
    r = run(
        str(photos / "a.png"), str(photos / "broken.png"), "--platform", "bluesky",
        "--model", str(tiny_checkpoint), "--format", "plain", "--max-new-tokens", "6",
    )  # fmt: skip
    assert r.exit_code == 1
    lines = [ln for ln in r.stdout.splitlines() if "\t" in ln]
    assert lines[0].split("\t")[:2] == [str(photos / "a.png"), "bluesky"]
    assert lines[1].startswith(f"{photos / 'broken.png'}\tbluesky\tERROR CorruptImageError")
    assert "1 of 2 input(s) failed" in r.output


def test_variants_are_sampled_and_ranked(photos, tiny_checkpoint):
    r = run(
        str(photos / "a.png"), "--platform", "instagram", "--variants", "3", "--seed", "1",
        "--model", str(tiny_checkpoint), "--max-new-tokens", "6",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    [rec] = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert rec["options"]["do_sample"] is True and rec["options"]["num_captions"] == 3
    assert rec["options"]["seed"] == 1
    assert 1 <= len(rec["variants"]) <= 3
    scores = [v["score"] for v in rec["variants"]]
    assert scores == sorted(scores, reverse=True)
    assert rec["alt_text"] == rec["variants"][0]["alt_text"]


def test_platform_is_required():
    r = CliRunner().invoke(main, ["social", "x.png"])
    assert r.exit_code == 2
    assert "Missing option '--platform'" in r.output


def test_social_writes_names_that_are_not_utf8(tiny_checkpoint, tmp_path):
    """Undecodable bytes in a name are written \\xNN, as blipcap caption writes them."""
    import os

    path = tmp_path / os.fsdecode(b"bad\xff.png")
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(path, "PNG")
    out = tmp_path / "out.jsonl"
    args = ["social", str(path), "--platform", "x", "--model", str(tiny_checkpoint)]
    args += ["--format", "jsonl", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert records and all(r["path"].endswith("bad\\xff.png") for r in records)
