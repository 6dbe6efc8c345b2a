"""The SQLite store: migrations, atomic batches, pruning of orphans, hybrid search and filters."""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import pytest

from blipcap.errors import BlipcapError, OptionsError
from blipcap.index import ImageRecord, PathRecord, SearchFilters, WriteBatch, open_store, rrf_fuse
from blipcap.index.sqlite import SQLiteStore, fts_match
from tests.fakes import WordEmbedder


def record(
    sha: str,
    caption: str,
    ocr: str = "",
    date: str = "2024-05-01T12:00:00",
):
    embedder = WordEmbedder()
    rec = ImageRecord(
        sha256=sha,
        width=4,
        height=3,
        format="PNG",
        bytes=10,
        caption=caption,
        ocr_text=ocr,
        date=date,
    )
    rec.embedding = embedder.embed([rec.search_text()])[0]
    rec.embedding_model = embedder.name
    rec.thumbnail = b"\xff\xd8jpeg"
    return rec


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "index.db")
    yield s
    s.close()


def fill(store):
    store.write(
        WriteBatch(
            images=[
                record("a" * 64, "a dog running on the beach", date="2023-07-04T10:00:00"),
                record("b" * 64, "a cat sleeping on a sofa", date="2024-01-02T09:00:00"),
                record(
                    "c" * 64,
                    "a white paper on a table",
                    ocr="INVOICE 4521 total due",
                    date="2024-03-05T08:00:00",
                ),
            ],
            links=[
                PathRecord("/photos/2023/dog.jpg", "a" * 64, 10, 1),
                PathRecord("/photos/2024/cat.jpg", "b" * 64, 10, 1),
                PathRecord("/scans/invoice.png", "c" * 64, 10, 1),
                PathRecord("/photos/2024/copy-of-dog.jpg", "a" * 64, 10, 1),
            ],
        )
    )


def test_migrations_recorded_wal_and_reopen(tmp_path):
    path = tmp_path / "index.db"
    with open_store(path) as s:
        assert s.schema_version() == 4
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 60000
    with open_store(path) as s:  # reopening applies nothing twice
        rows = s.conn.execute(
            "SELECT number, name FROM _blipcap_migrations ORDER BY number"
        ).fetchall()
        assert rows == [
            (1, "create_tables"),
            (2, "full_text_search"),
            (3, "change_counter"),
            (4, "ocr_substrings"),
        ]


def test_refuses_a_newer_schema_and_a_missing_index(tmp_path):
    path = tmp_path / "index.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO _blipcap_migrations VALUES (99, 'future', 'x')")
    conn.commit()
    conn.close()
    with pytest.raises(BlipcapError, match="newer blipcap"):
        SQLiteStore(path)
    with pytest.raises(BlipcapError, match="blipcap index PHOTOS_DIR"):
        open_store(tmp_path / "missing.db", create=False)


def test_not_a_database(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("hello " * 1000)
    with pytest.raises(BlipcapError, match="not a blipcap index"):
        SQLiteStore(path)


def test_write_links_prunes_orphans_and_counts(store):
    fill(store)
    assert store.counts() == {"images": 3, "paths": 4, "with_text": 1}
    assert store.paths_under(["/photos/2024"]) == {
        "/photos/2024/cat.jpg": PathRecord("/photos/2024/cat.jpg", "b" * 64, 10, 1),
        "/photos/2024/copy-of-dog.jpg": PathRecord("/photos/2024/copy-of-dog.jpg", "a" * 64, 10, 1),
    }
    assert store.paths_under(["/photos/202"]) == {}  # a folder, not a string prefix
    # Removing one of two copies keeps the image; removing the last one drops it.
    store.write(WriteBatch(removals=["/photos/2023/dog.jpg"]))
    assert store.existing_hashes(["a" * 64, "d" * 64]) == {"a" * 64}
    store.write(WriteBatch(removals=["/photos/2024/copy-of-dog.jpg"]))
    assert store.existing_hashes(["a" * 64]) == set()
    assert store.conn.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 2
    assert store.conn.execute("SELECT count(*) FROM thumbnails").fetchone()[0] == 2
    assert store.integrity_check() == "ok"
    # Relinking a path to other content drops the content it pointed at.
    store.write(WriteBatch(links=[PathRecord("/photos/2024/cat.jpg", "c" * 64, 11, 2)]))
    assert store.existing_hashes(["b" * 64, "c" * 64]) == {"c" * 64}
    # A link to content that does not exist is reported, not half-written.
    assert store.write(WriteBatch(links=[PathRecord("/x.jpg", "e" * 64, 1, 1)])) == ["/x.jpg"]


def test_a_failing_batch_leaves_nothing_behind(store):
    bad = record("d" * 64, "a dog")
    bad.width = None  # NOT NULL: the insert fails half way through the batch
    with pytest.raises(sqlite3.IntegrityError):
        store.write(
            WriteBatch(
                images=[record("e" * 64, "a cake"), bad],
                links=[PathRecord("/e.jpg", "e" * 64, 1, 1)],
            )
        )
    assert store.counts() == {"images": 0, "paths": 0, "with_text": 0}


def test_hybrid_search_ranks_and_snippets(store):
    fill(store)
    hits = store.search("invoice", embedder=WordEmbedder())
    assert [h.path for h in hits] == ["/scans/invoice.png"]
    assert hits[0].snippet == "[INVOICE] 4521 total due"
    assert hits[0].has_text and hits[0].text_rank == 1 and hits[0].semantic_rank == 1
    assert hits[0].score == pytest.approx(2 / 61)
    # Words match by stem ("running" ~ "run"), semantic by meaning (here: word overlap).
    hits = store.search("dogs run", embedder=WordEmbedder())
    assert [h.path for h in hits] == ["/photos/2023/dog.jpg"]
    assert hits[0].paths == ["/photos/2023/dog.jpg", "/photos/2024/copy-of-dog.jpg"]
    assert hits[0].snippet == "a [dog] [running] on the beach"


def test_search_modes_and_min_similarity(store):
    fill(store)
    semantic = store.search("sofa", embedder=WordEmbedder(), mode="semantic")
    assert [h.path for h in semantic] == ["/photos/2024/cat.jpg"]
    assert semantic[0].text_rank is None and semantic[0].similarity == pytest.approx(1 / np.sqrt(2))
    assert store.search("sofa", embedder=WordEmbedder(), mode="semantic", min_similarity=0.9) == []
    assert [h.path for h in store.search("table", mode="text")] == ["/scans/invoice.png"]
    with pytest.raises(OptionsError):
        store.search("x", mode="fuzzy")


def test_search_filters(store):
    fill(store)
    e = WordEmbedder()
    query = "dog cat invoice"
    every = {h.sha256[0] for h in store.search(query, embedder=e)}
    assert every == {"a", "b", "c"}
    assert {
        h.sha256[0] for h in store.search(query, embedder=e, filters=SearchFilters(has_text=True))
    } == {"c"}
    assert {
        h.sha256[0] for h in store.search(query, embedder=e, filters=SearchFilters(has_text=False))
    } == {"a", "b"}
    in_2024 = store.search(query, embedder=e, filters=SearchFilters(folder="/photos/2024"))
    assert {h.sha256[0] for h in in_2024} == {"a", "b"}
    # The copy inside the folder asked for is the one shown.
    assert {h.path for h in in_2024} == {"/photos/2024/copy-of-dog.jpg", "/photos/2024/cat.jpg"}
    dated = SearchFilters(since="2024-01-01", until="2024-01-02")
    assert [h.sha256[0] for h in store.search(query, embedder=e, filters=dated)] == ["b"]
    with pytest.raises(OptionsError, match="not a date"):
        store.search(query, embedder=e, filters=SearchFilters(since="last tuesday"))


def test_vector_cache_sees_writes_from_another_connection(tmp_path):
    path = tmp_path / "index.db"
    with SQLiteStore(path) as reader, SQLiteStore(path) as writer:
        assert reader.search("dog", embedder=WordEmbedder(), mode="semantic") == []
        fill(writer)
        assert [
            h.sha256[0] for h in reader.search("dog", embedder=WordEmbedder(), mode="semantic")
        ] == ["a"]


def test_fts_match_quotes_words_and_drops_operators():
    assert fts_match('dog AND "cat" OR -NEAR(x*)') == '"dog" OR "cat" OR "near" OR "x"'
    assert fts_match("a dog on the beach") == '"dog" OR "beach"'
    # only stopwords: keep them rather than match nothing
    assert fts_match("to be or to be") == '"to" OR "be" OR "or"'
    assert fts_match("  ...  ") is None


def test_rrf_fuse():
    assert rrf_fuse([["a", "b"], ["b", "c"]], k=60) == [
        ("b", pytest.approx(1 / 62 + 1 / 61)),
        ("a", pytest.approx(1 / 61)),
        ("c", pytest.approx(1 / 62)),
    ]


def test_search_columns_are_shared_between_stores_and_refreshed(tmp_path):
    path = tmp_path / "index.db"
    with SQLiteStore(path) as first:
        fill(first)
        first.search("dog", embedder=WordEmbedder(), mode="semantic")
        cols = first._cache
    with SQLiteStore(path) as second:  # e.g. a server that opens the index per request
        second.search("dog", embedder=WordEmbedder(), mode="semantic")
        assert second._cache is cols
        second.write(WriteBatch(removals=["/scans/invoice.png"]))
        assert [h.sha256[0] for h in second.search("invoice", embedder=WordEmbedder())] == []
        assert second._cache is not cols
    # A new database at the same path is not mistaken for the old one.
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    with SQLiteStore(path) as fresh:
        assert fresh.search("dog", embedder=WordEmbedder(), mode="semantic") == []


def test_date_key():
    from blipcap.index.sqlite import date_key

    assert date_key("2021-07-04T18:30:00") == 20210704183000
    assert date_key("2021-07-04T23:59:59.999999") == 20210704235959
    assert date_key("2021-07-04") == 20210704000000
    assert date_key(None) == date_key("") == -1


def test_words_run_together_by_ocr_are_found_as_substrings(store):
    fill(store)
    store.write(
        WriteBatch(
            images=[record("d" * 64, "a sign on a wall", ocr="PARKINGPERMIT zone B4 expires 2024")],
            links=[PathRecord("/photos/sign.jpg", "d" * 64, 10, 1)],
        )
    )
    hits = store.search("permit", embedder=WordEmbedder(), mode="text")
    assert [h.path for h in hits] == ["/photos/sign.jpg"]
    assert hits[0].snippet == "PARKING[PERMIT] zone B4 expires 2024"
    # Whole-word matches rank before substring ones.
    both = store.search("invoice permit", embedder=WordEmbedder(), mode="text")
    assert [h.path for h in both] == ["/scans/invoice.png", "/photos/sign.jpg"]
    assert (
        store.search(
            "permit", embedder=WordEmbedder(), mode="text", filters=SearchFilters(has_text=False)
        )
        == []
    )


@pytest.mark.parametrize(
    "filters",
    [
        SearchFilters(folder="/photos/3"),
        SearchFilters(has_text=True),
        SearchFilters(folder="/photos/1", since="2022-06-01", has_text=False),
        SearchFilters(since="2030-01-01"),  # nothing passes
    ],
)
def test_filtered_text_search_is_the_same_either_way(store, monkeypatch, filters):
    """A selective filter goes into the SQL as a list of row ids; a loose one filters the
    ranked rows as they stream in. Both give the same hits in the same order."""
    import blipcap.index.sqlite as sqlite_store

    words = ["dog", "cat", "beach", "sofa", "invoice", "tree", "boat", "house"]
    batch = WriteBatch()
    for i in range(600):
        sha = f"{i:064x}"
        caption = f"a {words[i % 8]} near a {words[(i * 3) % 8]} and a {words[(i * 5) % 7]}"
        batch.images.append(
            record(
                sha,
                caption,
                ocr="INVOICE total" if i % 5 == 0 else "",
                date=f"{2020 + i % 4}-0{1 + i % 9}-01",
            )
        )
        batch.links.append(PathRecord(f"/photos/{i % 10}/img{i}.jpg", sha, 10, i))
    store.write(batch)
    for query in ("dog beach", "invoice", "cat sofa tree", "oice"):
        monkeypatch.setattr(sqlite_store, "_ALLOWED_LIST_MAX", 100_000)
        store._last_mask = None
        in_sql = store.text_search(query, filters, 40)
        monkeypatch.setattr(sqlite_store, "_ALLOWED_LIST_MAX", 0)
        store._last_mask = None
        streamed = store.text_search(query, filters, 40)
        assert in_sql == streamed
        if filters.since != "2030-01-01" and query != "oice":
            assert in_sql, query


def test_opening_an_index_another_program_has_locked(tmp_path):
    """A locked database waits (and then says it is locked), never 'not a SQLite database'."""
    import threading

    path = tmp_path / "index.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(BlipcapError, match="locked by another program"):
        SQLiteStore(path, busy_timeout_ms=300)
    threading.Timer(0.3, holder.rollback).start()
    store = SQLiteStore(path, busy_timeout_ms=5000)  # waits for the lock, then opens
    assert store.schema_version() >= 1
    store.close()
    holder.close()
