"""`blipcap export web` without a browser: its errors say how to fix them."""

from __future__ import annotations

import pytest

from blipcap.errors import OptionsError
from blipcap.export.web import ORT_DIST_ENV, ORT_WEB_VERSION, export_web, pillow_vertical_first
from blipcap.web.serving import check_bundle


def test_missing_onnxruntime_web_names_the_npm_command(tmp_path, monkeypatch):
    monkeypatch.delenv(ORT_DIST_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # no node_modules here or above
    with pytest.raises(OptionsError, match=f"npm install onnxruntime-web@{ORT_WEB_VERSION}"):
        export_web("unused", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_ort_dist_without_the_wasm_files_is_refused(tmp_path):
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "ort.wasm.min.mjs").write_text("")
    with pytest.raises(OptionsError, match="missing ort-wasm-simd-threaded.mjs"):
        export_web("unused", tmp_path / "out", ort_dist=tmp_path / "dist", webgpu=False)


def test_a_non_empty_out_that_is_no_bundle_is_never_overwritten(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(OptionsError, match="refusing to overwrite"):
        export_web("unused", tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_serving_a_directory_that_is_no_bundle_says_how_to_make_one(tmp_path):
    with pytest.raises(OptionsError, match="blipcap export web --model"):
        check_bundle(tmp_path)


def test_pillow_pass_order_probe_agrees_with_pillow():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 256, (60, 12, 3), dtype=np.uint8))
    both = np.asarray(im.resize((11, 9), Image.Resampling.BICUBIC))
    if pillow_vertical_first():
        two = im.resize((12, 9), Image.Resampling.BICUBIC).resize((11, 9), Image.Resampling.BICUBIC)
    else:
        two = im.resize((11, 60), Image.Resampling.BICUBIC).resize(
            (11, 9), Image.Resampling.BICUBIC
        )
    assert np.array_equal(both, np.asarray(two))
