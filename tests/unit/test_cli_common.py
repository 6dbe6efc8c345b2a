"""The option groups and loaders the commands share (cli/common.py), through the commands."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from blipcap.cli import main
from tests.fakes import FakeCaptioner, register
from tests.helpers import image_file


@pytest.fixture
def image(tmp_path):
    return image_file(tmp_path / "a.png", (200, 0, 0))


@pytest.mark.parametrize("value", ["0", "-1", "many"])
@pytest.mark.parametrize("command", ["caption", "eval"])
def test_batch_size_is_checked_before_the_model_loads(monkeypatch, image, command, value):
    asked = register(monkeypatch, FakeCaptioner())
    args = [str(image)] if command == "caption" else ["--golden", str(image)]
    result = CliRunner().invoke(main, [command, *args, "--batch-size", value])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--batch-size': use 'auto' or a positive integer" in result.output
    assert asked == []


def test_random_weights_warning_comes_from_the_loader(monkeypatch, image):
    asked = register(monkeypatch, FakeCaptioner(lambda item: "a red square", random_weights=True))
    result = CliRunner().invoke(main, ["caption", str(image), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert asked == [(None, "auto", "auto", "auto")]
    assert (
        "blipcap: this model has RANDOM weights (a test checkpoint): its captions are meaningless"
        in result.stderr
    )
    record = json.loads(result.stdout)
    assert record["caption"] == "a red square" and record["random_weights"] is True


def _help(*command: str) -> str:
    result = CliRunner().invoke(main, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", ["caption", "document", "index", "bench"])
def test_every_progress_flag_reads_the_same(command):
    line = next(ln for ln in _help(command).splitlines() if "--progress / --no-progress" in ln)
    assert line.split("--no-progress", 1)[1].strip() == (
        "Progress bar on stderr [default: when stderr is a terminal]."
    )


@pytest.mark.parametrize("command", ["caption", "eval"])
def test_batch_size_help_is_written_once(command):
    assert "Images per model batch; auto sizes batches to the available memory." in _help(command)


def test_export_names_what_its_model_option_accepts():
    text = _help("export", "onnx")
    assert "Hub id or local Hugging Face directory [env BLIPCAP_MODEL; default" in text
    assert "exported ONNX directory" not in text
    assert "or exported ONNX directory [env BLIPCAP_MODEL" in _help("caption")
