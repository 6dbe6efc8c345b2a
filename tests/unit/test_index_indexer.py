"""The incremental indexer with a fake captioner: what is captioned, linked, pruned, written back."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner
from PIL import Image

from blipcap.index import Indexer, IndexOptions, open_store, xmp
from tests.fakes import FakeCaptioner, register
from tests.fakes import LengthEmbedder as WordEmbedder
from tests.helpers import image_file as make


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    make(root / "red.png", (200, 0, 0))
    make(root / "trip" / "green.png", (0, 200, 0))
    make(root / "trip" / "blue.jpg", (0, 0, 200), quality=95)
    make(root / ".hidden" / "secret.png", (1, 2, 3))
    (root / "notes.txt").write_text("not an image, not indexed")
    return root


def run(db, roots, captioner=None, **options):
    captioner = captioner or FakeCaptioner()
    with open_store(db) as store:
        summary = Indexer(store, captioner, WordEmbedder(), IndexOptions(**options)).run(
            [str(r) for r in roots]
        )
    return summary, captioner


def counts(summary):
    return {k: v for k, v in summary.to_dict().items() if k != "xmp_written"}


def test_first_run_then_nothing_to_do(tmp_path, photos):
    db = tmp_path / "i.db"
    summary, cap = run(db, [photos], batch_size=2)
    assert counts(summary) == dict(
        scanned=3, added=3, updated=0, unchanged=0, removed=0, failed=0, captioned=3
    )
    assert cap.batches == [2, 1]
    summary, cap = run(db, [photos])
    assert counts(summary) == dict(
        scanned=3, added=0, updated=0, unchanged=3, removed=0, failed=0, captioned=0
    )
    assert cap.invocations == 0
    with open_store(db) as store:
        rec = store.get_image(
            store.paths_under([str(photos / "red.png")])[str(photos / "red.png")].sha256
        )
    assert rec["caption"] == "a photo of colour 200 0 0"
    assert (rec["width"], rec["height"], rec["format"]) == (32, 24, "PNG")
    assert (
        rec["provenance"]["model"] == "fake/model"
        and rec["provenance"]["machine_generated"] is True
    )
    assert rec["paths"] == [str(photos / "red.png")]
    assert Image.open(__import__("io").BytesIO(rec["thumbnail"])).format == "JPEG"


def test_rename_copy_touch_edit_remove(tmp_path, photos):
    db = tmp_path / "i.db"
    run(db, [photos])
    os.rename(photos / "red.png", photos / "renamed.png")  # rename: no caption
    shutil.copy(photos / "trip" / "green.png", photos / "green-copy.png")  # copy: no caption
    st = os.stat(photos / "trip" / "blue.jpg")
    os.utime(
        photos / "trip" / "blue.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9)
    )  # touch only
    make(photos / "trip" / "green.png", (0, 99, 0))  # edit: caption again
    summary, cap = run(db, [photos])
    assert counts(summary) == dict(
        scanned=4, added=2, updated=1, unchanged=1, removed=1, failed=0, captioned=1
    )
    with open_store(db) as store:
        assert sorted(os.path.basename(p) for p in store.paths_under([str(photos)])) == [
            "blue.jpg",
            "green-copy.png",
            "green.png",
            "renamed.png",
        ]
        assert store.counts() == {"images": 4, "paths": 4, "with_text": 0}
    os.remove(photos / "green-copy.png")
    summary, _ = run(db, [photos])
    assert (summary.removed, summary.captioned) == (1, 0)
    with open_store(db) as store:
        assert store.counts()["images"] == 3  # the old green content had no path left


def test_copies_in_one_run_are_captioned_once(tmp_path):
    root = tmp_path / "p"
    make(root / "a.png", (5, 6, 7))
    shutil.copy(root / "a.png", root / "b.png")
    summary, cap = run(tmp_path / "i.db", [root])
    assert (summary.added, summary.captioned, cap.invocations) == (2, 1, 1)


def test_failures_are_reported_and_not_pruned(tmp_path, photos):
    db = tmp_path / "i.db"
    run(db, [photos])
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    make(photos / "fails.png", (13, 0, 0))  # the fake model fails on it
    errors = []
    with open_store(db) as store:
        summary = Indexer(
            store, FakeCaptioner(), WordEmbedder(), on_error=lambda p, m: errors.append(p)
        ).run([str(photos)])
    assert (summary.failed, summary.added, summary.captioned) == (2, 0, 1)
    assert sorted(os.path.basename(p) for p in errors) == ["broken.jpg", "fails.png"]
    assert summary.errors[0]["path"].endswith("broken.jpg")
    # A root that is gone (an unmounted drive) is an error, and nothing under it is pruned.
    summary, _ = run(db, [tmp_path / "unmounted"])
    assert (summary.failed, summary.removed) == (1, 0)
    with open_store(db) as store:
        assert len(store.paths_under([str(photos)])) == 3


def test_recaption_runs_the_model_again(tmp_path, photos):
    db = tmp_path / "i.db"
    run(db, [photos])
    summary, cap = run(db, [photos], recaption=True)
    assert (summary.updated, summary.captioned, cap.invocations) == (3, 3, 3)


def test_exif_date_camera_and_embedded_description(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS 5D"
    exif[0x010E] = "Grandma's 80th birthday"
    exif.get_ifd(0x8769)[0x9003] = "2021:07:04 18:30:00"
    path = make(tmp_path / "p" / "party.jpg", (90, 90, 90), exif=exif)
    plain = make(tmp_path / "p" / "plain.png", (91, 90, 90))
    os.utime(plain, (1_700_000_000, 1_700_000_000))
    db = tmp_path / "i.db"
    run(db, [tmp_path / "p"])
    with open_store(db) as store:
        known = store.paths_under([str(tmp_path / "p")])
        rec = store.get_image(known[str(path)].sha256)
        other = store.get_image(known[str(plain)].sha256)
        hits = store.search("grandma birthday", embedder=WordEmbedder(), mode="text")
    assert (rec["taken_at"], rec["date"], rec["camera"]) == (
        "2021-07-04T18:30:00",
        "2021-07-04T18:30:00",
        "Canon EOS 5D",
    )
    assert rec["existing_description"] == "Grandma's 80th birthday"
    assert other["taken_at"] is None and other["camera"] is None
    assert other["date"] == __import__("datetime").datetime.fromtimestamp(1_700_000_000).isoformat()
    assert [h.path for h in hits] == [str(path)]


def test_garbage_exif_is_ignored(tmp_path):
    exif = Image.Exif()
    exif[0x0132] = "0000:00:00 00:00:00"
    exif[0x010F] = "\x00\x00"
    path = make(tmp_path / "p" / "odd.jpg", (40, 40, 40), exif=exif)
    run(tmp_path / "i.db", [path])
    with open_store(tmp_path / "i.db") as store:
        rec = store.get_image(store.paths_under([str(path)])[str(path)].sha256)
    assert rec["taken_at"] is None and rec["camera"] is None


def test_write_xmp_creates_updates_and_keeps_human_descriptions(tmp_path):
    root = tmp_path / "p"
    ours = make(root / "a.png", (10, 20, 30))
    human = make(root / "b.png", (40, 50, 60))
    (root / "b.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="5">'
        '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">Our cat Tom</rdf:li></rdf:Alt></dc:description>'
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    db = tmp_path / "i.db"
    summary, _ = run(db, [root], write_xmp=True)
    assert summary.xmp_written == 2
    created = xmp.read_sidecar(ours)
    assert created.path == str(root / "a.png.xmp")
    assert (created.description, created.machine_generated) == ("a photo of colour 10 20 30", True)
    kept = xmp.read_sidecar(human)
    assert (kept.description, kept.machine_generated, kept.caption) == (
        "Our cat Tom",
        False,
        "a photo of colour 40 50 60",
    )
    text = (root / "b.xmp").read_text()
    assert 'xmp:Rating="5"' in text and "ns0:" not in text
    # The existing description was read into the index, and is searchable.
    with open_store(db) as store:
        assert (
            store.get_image(store.paths_under([str(human)])[str(human)].sha256)[
                "existing_description"
            ]
            == "Our cat Tom"
        )
    # Nothing changed: nothing rewritten. A deleted sidecar is written again.
    before = (root / "a.png.xmp").stat().st_mtime_ns
    summary, _ = run(db, [root], write_xmp=True)
    assert summary.xmp_written == 0 and (root / "a.png.xmp").stat().st_mtime_ns == before
    os.remove(root / "a.png.xmp")
    summary, cap = run(db, [root], write_xmp=True)
    assert (summary.xmp_written, cap.invocations) == (1, 0)


def test_hostile_sidecar_is_ignored(tmp_path):
    path = make(tmp_path / "a.png", (1, 1, 1))
    (tmp_path / "a.png.xmp").write_text('<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')
    assert xmp.read_sidecar(path) is None


def test_index_cli_json_summary_is_the_last_line(tmp_path, photos, monkeypatch):
    from blipcap.cli import main

    cap = FakeCaptioner()
    opened = register(monkeypatch, cap)
    monkeypatch.setattr("blipcap.index.embeddings.get_embedder", lambda: WordEmbedder())
    (photos / "bad.png").write_bytes(b"nope")
    db = tmp_path / "i.db"
    result = CliRunner().invoke(
        main, ["index", str(photos), "--db", str(db), "--json", "--ocr", "none"]
    )
    assert result.exit_code == 1, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["path"] == str(photos / "bad.png") and "not an image" in lines[0]["error"]
    assert lines[-1] == dict(
        scanned=4,
        added=3,
        updated=0,
        unchanged=0,
        removed=0,
        failed=1,
        captioned=3,
        xmp_written=0,
        db=str(db),
    )
    assert len(opened) == 1
    os.remove(photos / "bad.png")
    result = CliRunner().invoke(main, ["index", str(photos), "--db", str(db), "--ocr", "none"])
    assert result.exit_code == 0, result.output
    assert len(opened) == 1  # nothing new: the model was not even loaded
    assert result.stdout == (
        f"scanned 3, added 0, updated 0, unchanged 3, removed 0, failed 0; captioned 0 image(s) -> {db}\n"
    )
    result = CliRunner().invoke(
        main, ["search", "colour", "--db", str(db), "--mode", "text", "--limit", "1"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].startswith("   caption: a photo of colour")
    result = CliRunner().invoke(main, ["search", "x", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 2 and "blipcap index PHOTOS_DIR" in result.output


@pytest.mark.parametrize("command", ["index", "search"])
def test_help_has_examples(command):
    from blipcap.cli import main

    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and f"blipcap {command} " in result.output
    assert "--db PATH|URL" in result.output
