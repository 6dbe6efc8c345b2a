"""The caption's confidence in the index: migration 5 adds the column, writes keep it, search shows it."""

from __future__ import annotations

import sqlite3

from test_index_store import WordEmbedder, record

from blipcap.index import PathRecord, WriteBatch
from blipcap.index.migrations import SQLITE
from blipcap.index.sqlite import SQLiteStore


def test_confidence_is_stored_and_shown_in_search_hits(tmp_path):
    with SQLiteStore(tmp_path / "index.db") as store:
        sure, unknown = record("a" * 64, "a dog on the beach"), record("b" * 64, "a dog on a sofa")
        sure.confidence = 0.61234
        store.write(
            WriteBatch(
                images=[sure, unknown],
                links=[
                    PathRecord("/p/a.jpg", "a" * 64, 1, 1),
                    PathRecord("/p/b.jpg", "b" * 64, 1, 1),
                ],
            )
        )
        hits = {h.path: h for h in store.search("dog", embedder=WordEmbedder())}
        assert hits["/p/a.jpg"].confidence == 0.61234
        assert hits["/p/a.jpg"].to_dict()["confidence"] == 0.6123
        assert (
            hits["/p/b.jpg"].confidence is None and hits["/p/b.jpg"].to_dict()["confidence"] is None
        )
        assert store.get_image("a" * 64)["confidence"] == 0.61234


def test_an_index_from_before_gains_the_column_empty(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)  # the schema as migrations 1-4 left it, with one image
    conn.execute(
        "CREATE TABLE _blipcap_migrations (number INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)"
    )
    for number, name, sql in SQLITE[:4]:
        conn.executescript(sql)
        conn.execute("INSERT INTO _blipcap_migrations VALUES (?, ?, 'then')", (number, name))
    conn.execute(
        "INSERT INTO images (sha256, width, height, format, bytes, caption, indexed_at) "
        "VALUES (?, 1, 1, 'PNG', 1, 'an old caption', 'then')",
        ("c" * 64,),
    )
    conn.commit()
    conn.close()
    with SQLiteStore(path) as store:
        assert store.schema_version() == 5
        old = store.get_image("c" * 64)
        assert old["caption"] == "an old caption" and old["confidence"] is None


def test_the_indexer_stores_each_captions_confidence(tmp_path):
    from dataclasses import replace

    import test_index_indexer as t

    from blipcap.index import open_store
    from blipcap.results import Confidence

    class SureCaptioner(t.FakeCaptioner):
        def caption(self, images, batch_size="auto", **kwargs):
            sure = Confidence.from_logprobs([-0.25, -0.75])  # score exp(-0.5)
            return [
                replace(c, confidences=[sure])
                for c in super().caption(images, batch_size=batch_size)
            ]

    root = tmp_path / "photos"
    t.make(root / "red.png", (200, 0, 0))
    t.run(tmp_path / "i.db", [root], SureCaptioner())
    with open_store(tmp_path / "i.db") as store:
        (hit,) = store.search("colour", embedder=t.WordEmbedder(), mode="text")
    assert hit.to_dict()["confidence"] == 0.6065
