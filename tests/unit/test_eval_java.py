"""Without Java the metrics cannot run: the error says which package to install."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from blipcap.cli import main
from blipcap.errors import MissingSystemDependencyError
from blipcap.evaluation.metrics import find_java, java_version

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eval"


@pytest.fixture
def no_java(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)


def test_missing_java_names_the_package(no_java):
    with pytest.raises(MissingSystemDependencyError) as info:
        find_java()
    message = str(info.value)
    assert "PTB tokenizer and METEOR are Java programs" in message
    assert "sudo apt-get install default-jre-headless" in message
    assert java_version() is None


def test_eval_stops_before_any_work_without_java(no_java):
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "--annotations",
            str(FIXTURES / "coco_captions.json"),
            "--predictions",
            str(FIXTURES / "coco_results.json"),
        ],
    )
    assert result.exit_code == 2
    assert "apt-get install default-jre-headless" in result.output
