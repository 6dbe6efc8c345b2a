"""Numbered schema migrations for both stores.

Each migration is applied once, in order, inside a transaction, and recorded
in a ``*_migrations`` table with its number and name. Never edit a released
migration: add the next number. A database newer than this code (a higher
number than we know) is refused rather than misread.
"""

from __future__ import annotations

# ------------------------------------------------------------------ SQLite
# Embeddings and thumbnails live in their own tables so that scanning one
# never drags the other's blobs through the page cache.

SQLITE: list[tuple[int, str, str]] = [
    (
        1,
        "create_tables",
        """
        CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            format TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            caption TEXT,
            captions TEXT NOT NULL DEFAULT '[]',
            ocr_text TEXT NOT NULL DEFAULT '',
            ocr_engine TEXT,
            has_text INTEGER NOT NULL DEFAULT 0,
            existing_description TEXT,
            taken_at TEXT,
            date TEXT,
            camera TEXT,
            provenance TEXT,
            indexed_at TEXT NOT NULL
        );
        CREATE INDEX images_date ON images(date);
        CREATE TABLE paths (
            path TEXT PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL
        );
        CREATE INDEX paths_image ON paths(image_id);
        CREATE TABLE embeddings (
            image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            vector BLOB NOT NULL
        );
        CREATE TABLE thumbnails (
            image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
            jpeg BLOB NOT NULL
        );
        """,
    ),
    (
        2,
        "full_text_search",
        """
        CREATE VIRTUAL TABLE images_fts USING fts5(
            caption, existing_description, ocr_text,
            content='images', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER images_fts_insert AFTER INSERT ON images BEGIN
            INSERT INTO images_fts(rowid, caption, existing_description, ocr_text)
            VALUES (new.id, new.caption, new.existing_description, new.ocr_text);
        END;
        CREATE TRIGGER images_fts_delete AFTER DELETE ON images BEGIN
            INSERT INTO images_fts(images_fts, rowid, caption, existing_description, ocr_text)
            VALUES ('delete', old.id, old.caption, old.existing_description, old.ocr_text);
        END;
        CREATE TRIGGER images_fts_update AFTER UPDATE ON images BEGIN
            INSERT INTO images_fts(images_fts, rowid, caption, existing_description, ocr_text)
            VALUES ('delete', old.id, old.caption, old.existing_description, old.ocr_text);
            INSERT INTO images_fts(rowid, caption, existing_description, ocr_text)
            VALUES (new.id, new.caption, new.existing_description, new.ocr_text);
        END;
        """,
    ),
    (
        3,
        "change_counter",
        # 'generation' is bumped by every write that changes images, so a search
        # process knows when to reload its in-memory columns; 'database_id' tells
        # a recreated file from the old one at the same path.
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta(key, value) VALUES ('generation', 0);
        INSERT INTO meta(key, value) VALUES ('database_id', abs(random()));
        """,
    ),
    (
        4,
        "ocr_substrings",
        # OCR often runs words together ("Invoicenumber4521") and people search for
        # parts of codes and names: a trigram index over the OCR text finds substrings.
        """
        CREATE VIRTUAL TABLE ocr_trigram USING fts5(
            ocr_text, content='images', content_rowid='id', tokenize='trigram'
        );
        INSERT INTO ocr_trigram(ocr_trigram) VALUES ('rebuild');
        CREATE TRIGGER ocr_trigram_insert AFTER INSERT ON images BEGIN
            INSERT INTO ocr_trigram(rowid, ocr_text) VALUES (new.id, new.ocr_text);
        END;
        CREATE TRIGGER ocr_trigram_delete AFTER DELETE ON images BEGIN
            INSERT INTO ocr_trigram(ocr_trigram, rowid, ocr_text) VALUES ('delete', old.id, old.ocr_text);
        END;
        CREATE TRIGGER ocr_trigram_update AFTER UPDATE OF ocr_text ON images BEGIN
            INSERT INTO ocr_trigram(ocr_trigram, rowid, ocr_text) VALUES ('delete', old.id, old.ocr_text);
            INSERT INTO ocr_trigram(rowid, ocr_text) VALUES (new.id, new.ocr_text);
        END;
        """,
    ),
    (
        5,
        "caption_confidence",
        # The decoder's confidence in the caption (results.Confidence.score, in (0, 1]);
        # NULL for images indexed before it was recorded, or without a caption.
        "ALTER TABLE images ADD COLUMN confidence REAL;",
    ),
]

# ------------------------------------------------------------------ PostgreSQL
# Tables are prefixed so the index can share a database with other things.

POSTGRES: list[tuple[int, str, str]] = [
    (
        1,
        "create_tables",
        """
        CREATE EXTENSION IF NOT EXISTS vector;
        CREATE TABLE blipcap_images (
            id BIGSERIAL PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            format TEXT NOT NULL,
            bytes BIGINT NOT NULL,
            caption TEXT,
            captions JSONB NOT NULL DEFAULT '[]',
            ocr_text TEXT NOT NULL DEFAULT '',
            ocr_engine TEXT,
            has_text BOOLEAN NOT NULL DEFAULT FALSE,
            existing_description TEXT,
            taken_at TEXT,
            date TEXT,
            camera TEXT,
            provenance JSONB,
            indexed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            embedding_model TEXT,
            embedding vector(384)
        );
        CREATE INDEX blipcap_images_embedding ON blipcap_images
            USING hnsw (embedding vector_cosine_ops);
        CREATE INDEX blipcap_images_date ON blipcap_images (date);
        CREATE TABLE blipcap_paths (
            path TEXT PRIMARY KEY,
            image_id BIGINT NOT NULL REFERENCES blipcap_images(id) ON DELETE CASCADE,
            size BIGINT NOT NULL,
            mtime_ns BIGINT NOT NULL
        );
        CREATE INDEX blipcap_paths_image ON blipcap_paths (image_id);
        CREATE INDEX blipcap_paths_prefix ON blipcap_paths (path text_pattern_ops);
        -- The full-text vectors in a narrow table of their own: a query whose words are
        -- common scans it, and scanning the wide image rows (with embeddings) is 5x slower.
        CREATE TABLE blipcap_text (
            image_id BIGINT PRIMARY KEY REFERENCES blipcap_images(id) ON DELETE CASCADE,
            search tsvector NOT NULL
        );
        CREATE INDEX blipcap_text_search ON blipcap_text USING gin (search);
        CREATE TABLE blipcap_thumbnails (
            image_id BIGINT PRIMARY KEY REFERENCES blipcap_images(id) ON DELETE CASCADE,
            jpeg BYTEA NOT NULL
        );
        """,
    ),
    (
        2,
        "caption_confidence",
        "ALTER TABLE blipcap_images ADD COLUMN confidence DOUBLE PRECISION;",
    ),
]
