"""The Ray job's stages as plain functions (no Ray start-up): listing, hashing, skipping, resume."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from tests.helpers import image_bytes

pa = pytest.importorskip("pyarrow")
pafs = pytest.importorskip("pyarrow.fs")
pq = pytest.importorskip("pyarrow.parquet")

from blipcap import distributed  # noqa: E402
from blipcap.distributed import (  # noqa: E402
    RayJob,
    check_job_inputs,
    done_hashes,
    list_sources,
    read_and_decode,
    settings_key,
)
from blipcap.errors import InputError, OptionsError  # noqa: E402


def jpeg(seed: int, size=(30, 20)) -> bytes:
    return image_bytes(seed, "JPEG", size)


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """s3://bucket/... served from a local folder through pyarrow's filesystem interface."""
    root = tmp_path / "bucket"
    (root / "photos" / "2024").mkdir(parents=True)
    (root / "photos" / "b.jpg").write_bytes(jpeg(1))
    (root / "photos" / "2024" / "a.JPG").write_bytes(jpeg(2))
    (root / "photos" / ".hidden.jpg").write_bytes(jpeg(3))
    (root / "photos" / "readme.md").write_text("x")

    def fake(uri):
        if distributed.is_remote(uri):  # like S3: paths are "bucket/key"
            return pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()), uri.split(
                "://", 1
            )[1]
        return pafs.LocalFileSystem(), uri

    monkeypatch.setattr(distributed, "filesystem_for", fake)
    return root


def test_lists_remote_prefixes_and_local_inputs(bucket, tmp_path):
    rows = list_sources(["s3://bucket/photos", str(tmp_path / "missing.jpg")])
    paths = [r["path"] for r in rows]
    assert paths == [
        "s3://bucket/photos/2024/a.JPG",
        "s3://bucket/photos/b.jpg",
        str(tmp_path / "missing.jpg"),
    ]
    assert [bool(r["listing_error"]) for r in rows] == [False, False, True]
    assert "no such file or directory" in rows[2]["listing_error"]
    with pytest.raises(InputError, match="not found. Check the bucket and prefix"):
        list_sources(["s3://bucket/nothing-here"])


def test_read_stage_hashes_skips_and_turns_bad_images_into_rows(bucket):
    rows = list_sources(["s3://bucket/photos"])
    data = {
        k: np.array([r[k] for r in rows] + [v], dtype=object)
        for k, v in (("path", "x.jpg"), ("listing_error", "gone"))
    }
    skip = hashlib.sha256(jpeg(1)).hexdigest()
    out = read_and_decode(data, done={skip}, size=(16, 12), resample=3)
    assert list(out["path"]) == [rows[0]["path"], "x.jpg"]  # b.jpg was done: dropped
    assert out["sha256"][0] == hashlib.sha256(jpeg(2)).hexdigest() and out["sha256"][1] == ""
    assert out["pixels"].shape == (2, 16, 12, 3) and out["pixels"].dtype == np.uint8
    want = np.asarray(
        Image.open(io.BytesIO(jpeg(2))).convert("RGB").resize((12, 16), Image.Resampling.BICUBIC)
    )
    assert np.array_equal(out["pixels"][0], want)
    assert list(out["error_type"]) == ["", "InputError"] and out["error_message"][1] == "gone"


def test_done_hashes_follow_settings_and_final_errors(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    err = pa.struct([("type", pa.string()), ("message", pa.string())])
    pq.write_table(
        pa.table(
            {
                "sha256": ["a", "b", "c", "d", None],
                "settings": ["s1", "s1", "s1", "s2", "s1"],
                "error": pa.array(
                    [
                        None,
                        {"type": "CorruptImageError", "message": "m"},
                        {"type": "FetchError", "message": "m"},
                        None,
                        None,
                    ],
                    err,
                ),
            }
        ),
        out / "part-1.parquet",
    )
    (out / "torn.parquet").write_bytes(b"PAR1 cut short")
    assert done_hashes(str(out), "s1") == {
        "a",
        "b",
    }  # transient errors and other settings are redone
    assert "ignoring unreadable" in capsys.readouterr().err
    assert done_hashes(str(tmp_path / "new"), "s1") == set()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OptionsError, match="is a file; give a folder"):
        done_hashes(str(tmp_path / "file"), "s1")


def test_settings_key_and_job_checks(tmp_path):
    a = settings_key("m", "r", {"num_beams": 1})
    assert a == settings_key("m", "r", {"num_beams": 1}) and len(a) == 16
    assert (
        a != settings_key("m", "r", {"num_beams": 3}) != settings_key("m", "r2", {"num_beams": 1})
    )
    with pytest.raises(OptionsError, match="needs --output DEST"):
        RayJob(sources=("x",), output="")
    with pytest.raises(OptionsError, match="cannot read standard input"):
        check_job_inputs(RayJob(sources=("-",), output=str(tmp_path)))
    (tmp_path / "f").write_text("")
    with pytest.raises(OptionsError, match="is a file"):
        check_job_inputs(RayJob(sources=("x",), output=str(tmp_path / "f")))
