"""A small SQLite cache of captions and OCR text, keyed by the image's SHA-256.

Keyed on content, not on path or mtime, so a re-run over a site captions
nothing it has seen, a renamed or copied image is still a hit, and an edited
image is always re-captioned. Captions are also keyed by the model (id and
revision) and the caption options, so changing either gives fresh captions.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

_SCHEMA = [
    # migration 1
    """
    CREATE TABLE IF NOT EXISTS captions (
        sha256 TEXT NOT NULL,
        model_key TEXT NOT NULL,
        caption TEXT NOT NULL,
        random_weights INTEGER NOT NULL DEFAULT 0,
        provenance TEXT,
        created REAL NOT NULL,
        PRIMARY KEY (sha256, model_key)
    );
    CREATE TABLE IF NOT EXISTS ocr (
        sha256 TEXT NOT NULL,
        engine TEXT NOT NULL,
        text TEXT NOT NULL,
        coverage REAL,
        created REAL NOT NULL,
        PRIMARY KEY (sha256, engine)
    );
    """,
    # migration 2: the caption's confidence score (NULL when the model gave none)
    """
    ALTER TABLE captions ADD COLUMN confidence REAL;
    """,
]


def default_cache_path() -> Path:
    """``$BLIPCAP_CACHE_DIR`` or ``$XDG_CACHE_HOME/blipcap`` or ``~/.cache/blipcap``, file alt-text.sqlite."""
    root = os.environ.get("BLIPCAP_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "blipcap")
    return Path(root) / "alt-text.sqlite"


class CaptionCache:
    """Captions and OCR results by image content hash. ``path=None`` keeps nothing (no cache)."""

    def __init__(self, path: str | os.PathLike[str] | None):
        self.path = Path(path) if path is not None else None
        self.hits = 0
        self.misses = 0
        if self.path is None:
            self._db = sqlite3.connect(":memory:")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=5000")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(_SCHEMA[version:], start=version + 1):
            with self._db:
                self._db.executescript(script)
                self._db.execute(f"PRAGMA user_version={number}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CaptionCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_caption(
        self, sha256: str, model_key: str
    ) -> tuple[str, bool, dict | None, float | None] | None:
        """``(caption, random_weights, provenance, confidence)`` or None."""
        row = self._db.execute(
            "SELECT caption, random_weights, provenance, confidence FROM captions "
            "WHERE sha256=? AND model_key=?",
            (sha256, model_key),
        ).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return row[0], bool(row[1]), json.loads(row[2]) if row[2] else None, row[3]

    def put_captions(self, rows: list[tuple]) -> None:
        """Store ``(sha256, model_key, caption, random_weights, provenance[, confidence])`` rows.

        One transaction for all rows.
        """
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO captions (sha256, model_key, caption, random_weights, "
                "provenance, created, confidence) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (s, k, c, int(r), json.dumps(p) if p else None, now, rest[0] if rest else None)
                    for s, k, c, r, p, *rest in rows
                ],
            )

    def get_ocr(self, sha256: str, engine: str) -> tuple[str, float | None] | None:
        row = self._db.execute(
            "SELECT text, coverage FROM ocr WHERE sha256=? AND engine=?", (sha256, engine)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def put_ocr(self, sha256: str, engine: str, text: str, coverage: float | None) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO ocr VALUES (?, ?, ?, ?, ?)",
                (sha256, engine, text, coverage, time.time()),
            )
