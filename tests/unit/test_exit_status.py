"""Every command keeps the exit-status contract: 2 usage or configuration, 3 the model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from blipcap.cli import COMMANDS, main
from blipcap.cli.common import EXIT_MODEL, EXIT_USAGE

MISSING_MODEL = "/nonexistent/blip-model"


def run(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BLIPCAP_CACHE_DIR", str(tmp_path / "cache"))
    Image.new("RGB", (32, 32), "red").save(tmp_path / "cat.png")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text('<img src="../cat.png">\n')
    (tmp_path / "golden.jsonl").write_text(
        '{"path": "cat.png", "caption": "a red square", "error": null, '
        f'"model": "{MISSING_MODEL}", "backend": "torch", "dtype": "float32"}}\n'
    )
    return tmp_path


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unknown_option_is_a_usage_error(command):
    args = [command, "onnx"] if command == "export" else [command]
    result = run([*args, "--no-such-option"])
    assert result.exit_code == EXIT_USAGE, result.output


# Every command that runs the model, given a model that does not exist.
MODEL_COMMANDS = {
    "caption": ["caption", "cat.png"],
    "social": ["social", "cat.png", "--platform", "x"],
    "document": ["document", "cat.png"],
    "index": ["index", ".", "--db", "photos.sqlite"],
    "bench": ["bench", "--batch-sizes", "1", "--batches", "1"],
    "alt-text": ["alt-text", "site"],
    "export": ["export", "onnx", "--out", "out"],
    "eval": ["eval", "--golden", "golden.jsonl"],
    "distill": ["distill", ".", "--out", "student", "--vision-layers", "1", "--text-layers", "1"],
}


def test_every_model_command_is_covered():
    assert set(MODEL_COMMANDS) | {"serve", "search"} == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
def test_a_model_that_cannot_be_found_exits_3_with_one_message(command, workspace):
    result = run([*MODEL_COMMANDS[command], "--model", MISSING_MODEL])
    assert result.exit_code == EXIT_MODEL, result.output
    assert result.output.count(f"Model directory '{MISSING_MODEL}' does not exist") == 1
    assert "Traceback" not in result.output


def test_eval_configuration_errors_exit_2(workspace):
    (workspace / "bad.json").write_text("{")
    for args in (
        ["--annotations", "missing.json", "--images", "."],
        ["--annotations", "bad.json", "--images", "."],
        ["--golden", "missing.jsonl"],
        ["--references-from", "bad.json"],
        ["--golden", "golden.jsonl", "--annotations", "bad.json"],
    ):
        result = run(["eval", *args])
        assert result.exit_code == EXIT_USAGE, (args, result.output)


def test_search_without_an_index_exits_2(workspace):
    result = run(["search", "cat", "--db", "missing.sqlite"])
    assert result.exit_code == EXIT_USAGE, result.output


def test_serve_without_the_server_extra_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    result = run(["serve"])
    assert result.exit_code == EXIT_USAGE
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        "Error: The Python package 'uvicorn' is needed for blipcap serve but is not installed. "
        "Install it with: pip install 'blipcap[server]'"
    )


def test_a_command_whose_module_cannot_be_imported_is_a_configuration_error(monkeypatch):
    monkeypatch.setitem(COMMANDS, "broken", "blipcap.cli.no_such_module:command")
    result = run(["broken"])
    assert result.exit_code == EXIT_USAGE
    assert "'blipcap broken' is unavailable" in result.output
