"""``--output FILE``: written atomically, with the permissions of any file the user creates."""

from __future__ import annotations

import os
import stat

import pytest

from blipcap.cli.common import open_output


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_the_file_honours_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    path = tmp_path / "captions.jsonl"
    with open_output(path) as out:
        out.write("{}\n")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert path.read_text() == "{}\n"
    assert os.umask(mask) == mask  # reading the umask left it as it was


def test_a_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), open_output(path) as out:
        out.write("new\n")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["captions.jsonl"]
