"""kill -9 during indexing, and two indexers on one database at once: real processes, real SQLite."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from PIL import Image

pytestmark = pytest.mark.slow

# The real `blipcap index` command in a subprocess, with a fake model that logs every
# image it captions (so invocations can be counted across runs) and can hang in a
# chosen batch so that the test kills it mid-captioning at a known point.
DRIVER = textwrap.dedent(
    """
    import hashlib, os, sys, time
    import numpy as np
    from blipcap.results import Caption, Provenance
    import blipcap.captioner as captioner_module
    import blipcap.index.embeddings as embeddings
    from blipcap.cli import main

    LOG = os.environ["FAKE_LOG"]
    HANG = int(os.environ.get("FAKE_HANG_BATCH", "0"))
    DELAY = float(os.environ.get("FAKE_DELAY", "0"))

    class Fake:
        random_weights = False
        batches = 0

        def caption(self, images, **kwargs):
            Fake.batches += 1
            if Fake.batches == HANG:
                open(LOG + ".hang", "w").close()
                time.sleep(600)
            time.sleep(DELAY * len(images))
            prov = Provenance("fake", None, "fake", "float32", "cpu", {}, "0")
            digests = [hashlib.sha256(im.tobytes()).hexdigest() for im in images]
            with open(LOG, "a") as fh:
                fh.write("".join(d + "\\n" for d in digests))
            return [Caption(None, "caption " + d[:16], provenance=prov) for d in digests]

    class Embed:
        name = "fake"
        def embed(self, texts):
            return np.ones((len(texts), 4), dtype=np.float32) / 2
        def embed_one(self, text):
            return self.embed([text])[0]

    captioner_module.get_captioner = lambda *args, **kwargs: Fake()  # loaded like a model
    embeddings.get_embedder = lambda: Embed()
    main(["index", *sys.argv[1:]])
    """
)

N_IMAGES = 48


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    for i in range(N_IMAGES):
        folder = root / f"roll{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 12), (i * 5 % 256, i * 11 % 256, i * 17 % 256)).save(
            folder / f"img{i:03d}.png"
        )
    return root


def start(tmp_path, photos, db, log, **env):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    environment = dict(os.environ, FAKE_LOG=str(log), **{k: str(v) for k, v in env.items()})
    args = [
        sys.executable,
        str(driver),
        str(photos),
        "--db",
        str(db),
        "--json",
        "--ocr",
        "none",
        "--batch-size",
        "4",
    ]
    return subprocess.Popen(
        args, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def rows(db):
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return sorted(
            conn.execute(
                "SELECT p.path, i.sha256, i.caption, i.width, i.height, i.has_text, length(t.jpeg) > 0 "
                "FROM paths p JOIN images i ON i.id = p.image_id JOIN thumbnails t ON t.image_id = i.id"
            ).fetchall()
        )
    finally:
        conn.close()


def reference(tmp_path, photos):
    db, log = tmp_path / "reference.db", tmp_path / "reference.log"
    proc = start(tmp_path, photos, db, log)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return rows(db)


def test_kill_9_mid_run_then_rerun(tmp_path, photos):
    expected = reference(tmp_path, photos)
    assert len(expected) == N_IMAGES
    db, log = tmp_path / "index.db", tmp_path / "calls.log"
    proc = start(tmp_path, photos, db, log, FAKE_HANG_BATCH=6)  # 5 batches (20 images) committed
    deadline = time.monotonic() + 120
    while not (tmp_path / "calls.log.hang").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert len(rows(db)) == 20  # whole batches only; integrity_check is ok
    proc = start(tmp_path, photos, db, log)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = __import__("json").loads(out.splitlines()[-1])
    assert (summary["unchanged"], summary["added"], summary["captioned"]) == (20, 28, 28)
    calls = log.read_text().split()
    assert len(calls) == len(set(calls)) == N_IMAGES  # nothing captioned twice
    assert rows(db) == expected


def test_kill_9_at_a_random_moment(tmp_path, photos):
    expected = reference(tmp_path, photos)
    db, log = tmp_path / "index.db", tmp_path / "calls.log"
    proc = start(tmp_path, photos, db, log, FAKE_DELAY=0.05)
    time.sleep(1.0 + (os.getpid() % 10) / 10)  # somewhere in the run, wherever it is
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    rows(db)  # integrity_check is ok whatever the moment was
    proc = start(tmp_path, photos, db, log)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    calls = log.read_text().split()
    # Only a batch whose captions were not yet committed can be captioned again.
    assert N_IMAGES <= len(calls) <= N_IMAGES + 4
    assert rows(db) == expected


def test_two_indexers_at_once(tmp_path, photos):
    expected = reference(tmp_path, photos)
    db = tmp_path / "index.db"
    procs = [
        start(tmp_path, photos, db, tmp_path / f"calls{i}.log", FAKE_DELAY=0.005) for i in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert "locked" not in err and "locked" not in out
    assert rows(db) == expected
