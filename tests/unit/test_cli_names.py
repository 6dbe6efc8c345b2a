"""Every input gets its record whatever its name: undecodable bytes, newlines, tabs, backslashes."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BAD = os.fsdecode(b"bad\xff\xfe.jpg")
ODD = "two\nlines\tand\\slash.jpg"


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name in ("good.jpg", BAD, ODD, "café.jpg"):
        path = tmp_path / name
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path, "JPEG")
        paths.append(path)
    return paths


def run_cli(*args, env=None):
    """``blipcap`` in a subprocess (so stdout's real encoding applies), with this tree's code."""
    environ = {**os.environ, **(env or {})}
    environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    code = "import sys; from blipcap.cli import main; sys.exit(main())"
    argv = [sys.executable, "-c", code, *map(os.fsencode, args)]
    return subprocess.run(argv, capture_output=True, env=environ, timeout=300)


EXPECTED = ["good.jpg", "bad\\xff\\xfe.jpg", "two\\nlines\\tand\\\\slash.jpg", "café.jpg"]


@pytest.mark.parametrize("fmt", ["jsonl", "plain", "csv"])
@pytest.mark.parametrize("to_file", [True, False])
def test_every_name_gets_its_escaped_record(tiny_checkpoint, images, tmp_path, fmt, to_file):
    out = tmp_path / "out.txt"
    args = ["caption", *map(str, images), "--model", str(tiny_checkpoint), "--format", fmt]
    args += ["--max-new-tokens", "3"]
    p = run_cli(*args, *(["-o", str(out)] if to_file else []))
    assert p.returncode == 0, p.stderr.decode()
    text = out.read_text(encoding="utf-8") if to_file else p.stdout.decode("utf-8")
    assert [Path(name).name for name in names(text, fmt)] == EXPECTED


def names(text: str, fmt: str) -> list[str]:
    if fmt == "jsonl":
        return [json.loads(line)["path"] for line in text.splitlines()]
    if fmt == "plain":
        return [line.split("\t")[0] for line in text.splitlines()]
    return [row["path"] for row in csv.DictReader(io.StringIO(text))]


@pytest.mark.parametrize("fmt", ["jsonl", "plain", "csv"])
def test_a_strict_ascii_stdout_still_gets_every_record(tiny_checkpoint, images, fmt):
    args = ["caption", *map(str, images), "--model", str(tiny_checkpoint), "--format", fmt]
    p = run_cli(*args, "--max-new-tokens", "3", env={"PYTHONIOENCODING": "ascii:strict"})
    assert p.returncode == 0, p.stderr.decode()
    lines = p.stdout.decode("ascii").splitlines()
    assert len(lines) == len(images) + (fmt == "csv")


def test_plain_has_every_caption_of_num_captions(tiny_checkpoint, images):
    args = ["caption", str(images[0]), "--model", str(tiny_checkpoint), "--format", "plain"]
    p = run_cli(*args, "--beams", "3", "--num-captions", "3", "--max-new-tokens", "3")
    assert p.returncode == 0, p.stderr.decode()
    (line,) = p.stdout.decode().splitlines()
    assert len(line.split("\t")) == 1 + 3


def test_an_unreadable_odd_name_gets_an_error_record(tiny_checkpoint, tmp_path):
    broken = tmp_path / BAD
    broken.write_bytes(b"not an image")
    args = ["caption", str(broken), "--model", str(tiny_checkpoint), "--format", "jsonl"]
    p = run_cli(*args)
    assert p.returncode == 1
    (record,) = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert record["path"].endswith("bad\\xff\\xfe.jpg") and record["error"]


@pytest.mark.parametrize("report", ["r.json", "r.html", "r.sarif"])
def test_alt_text_reports_name_files_that_are_not_utf8(tmp_path, report):
    from click.testing import CliRunner

    from blipcap.cli.alttext import alt_text

    site = tmp_path / "site"
    site.mkdir()
    (site / os.fsdecode(b"p\xff.html")).write_text('<img src="a.png">')
    out = tmp_path / report
    result = CliRunner().invoke(alt_text, [str(site), "--check", "--report", str(out)])
    assert result.exit_code == 1, result.output
    assert "p\\xff.html:1:1: alt-missing" in result.output
    assert "p\\\\xff.html" in out.read_text(encoding="utf-8") or "p\\xff.html" in out.read_text()
