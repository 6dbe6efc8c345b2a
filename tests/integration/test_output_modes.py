"""``caption -o`` and ``social -o`` create files like every other output: 0666 less the umask."""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner
from PIL import Image

from blipcap.cli import main


@pytest.mark.parametrize(
    "command", [["caption"], ["social", "--platform", "mastodon"]], ids=["caption", "social"]
)
def test_output_file_mode_follows_the_umask(command, tiny_checkpoint, tmp_path):
    Image.new("RGB", (40, 32), "teal").save(tmp_path / "a.png")
    out = tmp_path / "out.jsonl"
    old = os.umask(0o022)
    try:
        result = CliRunner().invoke(
            main,
            [*command, str(tmp_path / "a.png"), "--model", str(tiny_checkpoint),
             "--max-new-tokens", "4", "-o", str(out)],
            catch_exceptions=False,
        )  # fmt: skip
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
