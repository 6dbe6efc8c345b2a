"""The installed ``blipcap`` console script, driven as a subprocess."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BLIPCAP = shutil.which("blipcap", path=str(Path(sys.executable).parent))


def run(*args, input=None, cwd=None):
    assert BLIPCAP, "the blipcap console script is not installed (pip install -e .)"
    return subprocess.run([BLIPCAP, *args], capture_output=True, input=input, cwd=cwd, timeout=300)


@pytest.fixture()
def photos(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.jpg", "a.png", "sub/c.webp"):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image, skipped by extension")
    return folder


def test_jsonl_records_in_stable_order(tiny_checkpoint, photos):
    p = run("caption", str(photos), "--model", str(tiny_checkpoint), "--max-new-tokens", "5")
    assert p.returncode == 0, p.stderr.decode()
    records = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert [Path(r["path"]).relative_to(photos).as_posix() for r in records] == [
        "a.png",
        "b.jpg",
        "sub/c.webp",
    ]
    for r in records:
        assert r["error"] is None and r["caption"]
        assert r["model"] == str(tiny_checkpoint) and r["backend"] == "torch"
        assert r["options"]["max_new_tokens"] == 5 and r["random_weights"] is True
    assert b"RANDOM weights" in p.stderr


def test_item_error_gives_exit_1_and_a_record(tiny_checkpoint, photos, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    p = run(
        "caption",
        str(photos / "a.png"),
        str(bad),
        "--model",
        str(tiny_checkpoint),
        "--format",
        "plain",
    )
    assert p.returncode == 1
    lines = p.stdout.decode().splitlines()
    assert lines[0].startswith(f"{photos / 'a.png'}\t") and "ERROR" not in lines[0]
    assert lines[1].startswith(f"{bad}\tERROR CorruptImageError")
    assert b"1 of 2 input(s) failed" in p.stderr


def test_stdin_csv_and_atomic_output(tiny_checkpoint, photos, tmp_path):
    out = tmp_path / "out.csv"
    data = (photos / "b.jpg").read_bytes()
    p = run(
        "caption",
        "-",
        "--model",
        str(tiny_checkpoint),
        "--format",
        "csv",
        "-o",
        str(out),
        input=data,
    )
    assert p.returncode == 0, p.stderr.decode()
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["path", "caption", "captions", "error"]
    assert rows[1][0] == "-" and rows[1][1]
    assert not list(tmp_path.glob("*.partial"))


def test_usage_errors_exit_2(tiny_checkpoint, photos):
    assert run("caption").returncode == 2
    p = run("caption", str(photos), "--model", str(tiny_checkpoint), "--num-captions", "2")
    assert p.returncode == 2 and b"--sample or --beams" in p.stderr
    p = run("caption", str(photos), "--model", "./no/such/model")
    assert p.returncode != 0 and b"does not exist" in p.stderr


def test_help_teaches():
    p = run("caption", "--help")
    assert p.returncode == 0
    text = p.stdout.decode()
    for flag in (
        "--model",
        "--backend",
        "--device",
        "--dtype",
        "--preset",
        "--beams",
        "--format",
        "Examples:",
    ):
        assert flag in text
