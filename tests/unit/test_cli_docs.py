"""docs/cli.md is generated from --help; it must match the commands as they are."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cli_reference_is_up_to_date():
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr


def test_every_command_has_examples_in_its_help():
    text = (ROOT / "docs" / "cli.md").read_text()
    sections = text.split("\n## blipcap ")[1:]
    assert len(sections) >= 10
    leaves = [s for s in sections if "Commands:" not in s]
    missing = [s.splitlines()[0] for s in leaves if "Example" not in s and "example" not in s]
    assert not missing, f"--help without examples: {missing}"


def test_usage_lines_name_the_command_as_typed():
    text = (ROOT / "docs" / "cli.md").read_text()
    usages = [line for line in text.splitlines() if line.startswith("Usage: ")]
    assert len(usages) >= 10
    assert all(line.startswith("Usage: blipcap ") for line in usages), usages
    assert "Usage: blipcap caption [OPTIONS]" in text
