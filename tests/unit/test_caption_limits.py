"""Decoding settings the model cannot run, or memory cannot hold, are refused up front."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from blipcap.errors import OptionsError


@pytest.fixture(scope="module")
def captioner(tiny_checkpoint):
    from blipcap.captioner import Captioner

    return Captioner(tiny_checkpoint, device="cpu")


def test_more_new_tokens_than_positions_is_refused(captioner):
    with pytest.raises(OptionsError, match="use --max-new-tokens 511 or less"):
        captioner.caption([], max_new_tokens=10_000)


def test_beams_beyond_the_memory_budget_are_refused(captioner, monkeypatch):
    monkeypatch.setenv("BLIPCAP_MEMORY_BUDGET", "1GiB")
    with pytest.raises(OptionsError, match="more than the 1,024 MiB memory budget"):
        captioner.caption([], num_beams=10_000)


def test_settings_that_fit_still_run(captioner, monkeypatch):
    monkeypatch.setenv("BLIPCAP_MEMORY_BUDGET", "1GiB")
    assert captioner.caption([], num_beams=3, num_captions=3) == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--beams", "10000"], "lower --beams, --num-captions or --max-new-tokens"),
        (["--max-new-tokens", "100000"], "use --max-new-tokens 511 or less"),
    ],
)
def test_cli_refuses_with_exit_2(tiny_checkpoint, tmp_path, monkeypatch, flags, message):
    from blipcap.cli.caption import caption

    monkeypatch.setenv("BLIPCAP_MEMORY_BUDGET", "1GiB")
    image = tmp_path / "a.png"
    image.write_bytes(b"never decoded: the settings are refused first")
    result = CliRunner().invoke(caption, [str(image), "--model", str(tiny_checkpoint), *flags])
    assert result.exit_code == 2, result.output
    assert message in result.output
