"""The Ray Data job on a local Ray instance: CPU actors, a random checkpoint, real Parquet.

One module-scoped Ray instance (start-up is the slow part on 2 cores). The job
captions a folder with a broken image in it, writes Parquet whose captions
equal the local Captioner's, and a re-run after adding an image captions only
the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import image_bytes

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from blipcap import Captioner  # noqa: E402
from blipcap.distributed import RayJob, run_job  # noqa: E402

pytestmark = pytest.mark.slow


def jpeg(seed: int) -> bytes:
    return image_bytes(seed, "JPEG", (56, 40 + seed))


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=80 * 2**20,
        log_to_driver=False,
        configure_logging=False,
    )
    yield ray
    ray.shutdown()


def read_rows(folder) -> list[dict]:
    rows = pq.read_table(str(folder)).to_pylist()
    return sorted(rows, key=lambda r: (r["path"], str(r["captioned_at"])))


def test_caption_folder_then_resume(local_ray, tiny_checkpoint, tmp_path):
    src, out = tmp_path / "photos", tmp_path / "captions"
    (src / "sub").mkdir(parents=True)
    for i in range(4):
        (src / f"p{i}.jpg").write_bytes(jpeg(i))
    (src / "sub" / "copy.jpg").write_bytes(jpeg(0))  # same content as p0.jpg, another path
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "notes.txt").write_text("not an image")  # no image extension: not listed
    job = RayJob(
        sources=(str(src),),
        output=str(out),
        model=str(tiny_checkpoint),
        overrides={"max_new_tokens": 6},
        batch_size=4,
    )

    first = run_job(job)
    assert (first.listed, first.skipped, first.captioned, first.failed) == (6, 0, 5, 1)
    assert first.errors == {"CorruptImageError": 1}

    rows = read_rows(out)
    assert [os.path.relpath(r["path"], src) for r in rows] == [
        "broken.jpg", "p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg", "sub/copy.jpg",
    ]  # fmt: skip
    broken = rows[0]
    assert broken["caption"] is None and broken["captions"] == [] and broken["confidence"] is None
    assert broken["error"]["type"] == "CorruptImageError"
    assert "broken.jpg" in broken["error"]["message"]

    # Captions equal the local Captioner's, byte for byte; provenance is complete.
    cap = Captioner(str(tiny_checkpoint), backend="torch", device="cpu")
    local = {
        r.path: r for r in cap.caption([str(src / f"p{i}.jpg") for i in range(4)], max_new_tokens=6)
    }
    for r in rows[1:5]:
        want = local[r["path"]]
        assert r["caption"] == want.caption and r["captions"] == want.captions
        assert r["confidence"] == want.confidence.to_dict()  # as in a local record
        assert r["confidences"] == [c.to_dict() for c in want.confidences]
        assert r["error"] is None
        assert r["sha256"] == hashlib.sha256(open(r["path"], "rb").read()).hexdigest()
        assert r["model"] == str(tiny_checkpoint)
        assert r["revision"] == want.provenance.revision
        assert (r["backend"], r["dtype"], r["device"]) == ("torch", "float32", "cpu")
        assert json.loads(r["options"]) == want.provenance.options
        assert r["random_weights"] is True and r["machine_generated"] is True
    assert rows[5]["caption"] == rows[1]["caption"]  # same bytes, same caption

    # A re-run with one new image and one changed file captions exactly those two.
    (src / "p9.jpg").write_bytes(jpeg(9))
    (src / "p3.jpg").write_bytes(jpeg(33))
    second = run_job(job)
    assert (second.listed, second.skipped, second.captioned, second.failed) == (7, 5, 2, 0)
    rows = read_rows(out)
    assert len(rows) == 8
    names = sorted(os.path.relpath(r["path"], src) for r in rows)
    assert names == [
        "broken.jpg",
        "p0.jpg",
        "p1.jpg",
        "p2.jpg",
        "p3.jpg",
        "p3.jpg",
        "p9.jpg",
        "sub/copy.jpg",
    ]
    assert (
        len({r["sha256"] for r in rows if r["path"].endswith("p3.jpg")}) == 2
    )  # old and new content

    # Other options are other settings: nothing counts as done.
    other = run_job(
        RayJob(
            **{
                **job.__dict__,
                "overrides": {"max_new_tokens": 4},
                "sources": (str(src / "p1.jpg"),),
            }
        )
    )
    assert (other.listed, other.skipped, other.captioned) == (1, 0, 1)


def test_cli_engine_ray(local_ray, tiny_checkpoint, tmp_path):
    """The command line drives the same job (its own Ray instance in a subprocess)."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.jpg").write_bytes(jpeg(1))
    blipcap = shutil.which("blipcap") or os.path.join(os.path.dirname(sys.executable), "blipcap")
    env = {**os.environ, "RAY_ADDRESS": ""}
    cmd = [
        blipcap,
        "caption",
        "--engine",
        "ray",
        str(src),
        "--model",
        str(tiny_checkpoint),
        "--max-new-tokens",
        "5",
    ]
    missing = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert missing.returncode == 2 and "add --output DEST" in missing.stderr
    done = subprocess.run(
        [*cmd, "--output", str(out)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["listed"], summary["captioned"], summary["failed"]) == (1, 1, 0)
    assert "1 captioned, 0 already done, 0 failed of 1 image(s)" in done.stderr
    assert pq.read_table(str(out)).column("path").to_pylist() == [str(src / "a.jpg")]
