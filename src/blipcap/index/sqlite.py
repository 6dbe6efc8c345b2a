"""The default store: one SQLite file (WAL, FTS5 BM25, embeddings searched in NumPy).

Concurrency: WAL lets readers run beside the one writer; every write
transaction starts with ``BEGIN IMMEDIATE`` so two indexers queue on the
write lock (waiting up to ``busy_timeout``) instead of failing with
"database is locked" when a read transaction tries to become a write one.
Crash safety: one transaction per batch, so a kill -9 loses at most the batch
in flight and never leaves half of one behind.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BlipcapError
from . import migrations
from .store import (
    PathRecord,
    SearchFilters,
    Store,
    WriteBatch,
    fallback_snippet,
    query_terms,
)
from .text_search import date_key, fts_match, highlight
from .vectors import VectorIndex

BUSY_TIMEOUT_MS = 60_000
_COLUMNS: dict[str, _Columns] = {}  # realpath -> search columns, shared across stores
_COLUMNS_LOCK = threading.Lock()
_CHUNK = 500  # SQLite limits bound parameters per statement; query in chunks
# Up to this many rows passing a search filter, the filter goes into the full-text query
# as a JSON list of row ids (only those rows are scored); above it, ranked rows are
# filtered as they stream in.
_ALLOWED_LIST_MAX = 20_000


class SQLiteStore(Store):
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    ):
        self.path = Path(path)
        self.url = str(self.path)
        if not self.path.exists():
            if not create:
                raise BlipcapError(
                    f"no index at {self.path}. Build one first: blipcap index PHOTOS_DIR --db {self.path}"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
        self.conn = sqlite3.connect(
            str(self.path),
            isolation_level=None,
            check_same_thread=False,
            timeout=busy_timeout_ms / 1000,
        )
        self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self._lock = threading.RLock()
        mode = self._enable_wal(busy_timeout_ms / 1000)
        if mode.lower() != "wal":
            raise BlipcapError(f"{self.path}: could not switch to WAL journaling (got {mode!r}).")
        # NORMAL in WAL mode: consistent after any crash; only the last commits
        # may roll back on power loss, and the next run redoes them.
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()
        self._cache: _Columns | None = None
        self._last_mask: tuple[Any, np.ndarray] | None = None

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        # Under the lock: a search thread may still be using the connection, and
        # closing a SQLite connection in use by another thread crashes the process.
        with self._lock:
            self.conn.close()

    def _enable_wal(self, timeout: float) -> str:
        """Switch to WAL journaling; returns the journal mode now in force.

        Two programs opening a new index at once can both try to switch; SQLite
        then answers "database is locked" at once rather than waiting, so retry
        until ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                locked = isinstance(exc, sqlite3.OperationalError) and (
                    "locked" in str(exc) or "busy" in str(exc)
                )
                if not locked:
                    raise BlipcapError(
                        f"{self.path} is not a blipcap index (not a SQLite database: {exc})."
                    ) from None
                if time.monotonic() >= deadline:
                    raise BlipcapError(
                        f"{self.path} is locked by another program for over {timeout:g} s; "
                        "wait for it to finish and try again"
                    ) from None
                time.sleep(0.05)

    def _migrate(self) -> None:
        with self._write():
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS _blipcap_migrations "
                "(number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in self.conn.execute("SELECT number FROM _blipcap_migrations")}
            known = {n for n, _, _ in migrations.SQLITE}
            if done - known:
                raise BlipcapError(
                    f"{self.path} was written by a newer blipcap (schema {max(done)}); upgrade blipcap."
                )
            for number, name, sql in migrations.SQLITE:
                if number in done:
                    continue
                for statement in _statements(sql):
                    self.conn.execute(statement)
                self.conn.execute(
                    "INSERT INTO _blipcap_migrations VALUES (?, ?, ?)", (number, name, _now())
                )

    def _write(self) -> _Transaction:
        return _Transaction(self.conn, self._lock)

    def schema_version(self) -> int:
        return self.conn.execute("SELECT max(number) FROM _blipcap_migrations").fetchone()[0]

    def integrity_check(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]

    # ------------------------------------------------------------------ reads for the indexer

    def paths_under(self, roots: Sequence[str]) -> dict[str, PathRecord]:
        out: dict[str, PathRecord] = {}
        sql = (
            "SELECT p.path, i.sha256, p.size, p.mtime_ns FROM paths p JOIN images i ON i.id = p.image_id "
            "WHERE p.path = ? OR (p.path >= ? AND p.path < ?)"
        )
        with self._lock:
            for root in roots:
                low, high = SearchFilters(folder=root).folder_range()  # type: ignore[misc]
                for path, sha, size, mtime in self.conn.execute(sql, (root, low, high)):
                    out[path] = PathRecord(path, sha, size, mtime)
        return out

    def existing_hashes(self, hashes: Iterable[str]) -> set[str]:
        hashes = list(hashes)
        found: set[str] = set()
        with self._lock:
            for i in range(0, len(hashes), _CHUNK):
                chunk = hashes[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self.conn.execute(
                    f"SELECT sha256 FROM images WHERE sha256 IN ({marks})", chunk
                )
                found.update(r[0] for r in rows)
        return found

    def captions_for(self, paths: Sequence[str]) -> dict[str, tuple[str | None, dict | None]]:
        out: dict[str, tuple[str | None, dict | None]] = {}
        with self._lock:
            for i in range(0, len(paths), _CHUNK):
                chunk = list(paths[i : i + _CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = self.conn.execute(
                    "SELECT p.path, i.caption, i.provenance FROM paths p JOIN images i ON i.id = p.image_id "
                    f"WHERE p.path IN ({marks})",
                    chunk,
                )
                for path, caption, prov in rows:
                    out[path] = (caption, json.loads(prov) if prov else None)
        return out

    # ------------------------------------------------------------------ writes

    def write(self, batch: WriteBatch) -> list[str]:
        failed: list[str] = []
        candidates: set[int] = set()  # images that may have lost their last path
        with self._write():
            c = self.conn
            for rec in batch.images:
                c.execute(
                    "INSERT INTO images (sha256, width, height, format, bytes, caption, captions, ocr_text, "
                    "ocr_engine, has_text, existing_description, taken_at, date, camera, provenance, indexed_at, "
                    "confidence) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(sha256) DO UPDATE SET "
                    "caption = excluded.caption, captions = excluded.captions, ocr_text = excluded.ocr_text, "
                    "ocr_engine = excluded.ocr_engine, has_text = excluded.has_text, "
                    "existing_description = excluded.existing_description, provenance = excluded.provenance, "
                    "indexed_at = excluded.indexed_at, confidence = excluded.confidence",
                    (
                        rec.sha256, rec.width, rec.height, rec.format, rec.bytes, rec.caption,
                        json.dumps(rec.captions), rec.ocr_text, rec.ocr_engine, int(rec.has_text),
                        rec.existing_description, rec.taken_at, rec.date, rec.camera,
                        json.dumps(rec.provenance) if rec.provenance is not None else None, _now(),
                        rec.confidence,
                    ),
                )  # fmt: skip
                (image_id,) = c.execute(
                    "SELECT id FROM images WHERE sha256 = ?", (rec.sha256,)
                ).fetchone()
                candidates.add(image_id)
                if rec.embedding is not None:
                    vector = np.asarray(rec.embedding, dtype="<f4").tobytes()
                    c.execute(
                        "INSERT OR REPLACE INTO embeddings (image_id, model, vector) VALUES (?, ?, ?)",
                        (image_id, rec.embedding_model, vector),
                    )
                if rec.thumbnail is not None:
                    c.execute(
                        "INSERT OR REPLACE INTO thumbnails (image_id, jpeg) VALUES (?, ?)",
                        (image_id, rec.thumbnail),
                    )
            for link in batch.links:
                row = c.execute("SELECT id FROM images WHERE sha256 = ?", (link.sha256,)).fetchone()
                if row is None:
                    failed.append(link.path)
                    continue
                old = c.execute(
                    "SELECT image_id FROM paths WHERE path = ?", (link.path,)
                ).fetchone()
                if old is not None and old[0] != row[0]:
                    candidates.add(old[0])
                c.execute(
                    "INSERT INTO paths (path, image_id, size, mtime_ns) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(path) DO UPDATE SET image_id = excluded.image_id, size = excluded.size, "
                    "mtime_ns = excluded.mtime_ns",
                    (link.path, row[0], link.size, link.mtime_ns),
                )
            for i in range(0, len(batch.removals), _CHUNK):
                chunk = batch.removals[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                candidates.update(
                    r[0]
                    for r in c.execute(f"SELECT image_id FROM paths WHERE path IN ({marks})", chunk)
                )
                c.execute(f"DELETE FROM paths WHERE path IN ({marks})", chunk)
            # Content that no path points at any more (edited or removed files) goes too.
            orphans = 0
            ordered = sorted(candidates)
            for i in range(0, len(ordered), _CHUNK):
                chunk = ordered[i : i + _CHUNK]
                orphans += c.execute(
                    f"DELETE FROM images WHERE id IN ({','.join('?' * len(chunk))}) "
                    "AND NOT EXISTS (SELECT 1 FROM paths WHERE paths.image_id = images.id)",
                    chunk,
                ).rowcount
            if batch.images or orphans:  # the in-memory search columns must reload
                c.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        return failed

    # ------------------------------------------------------------------ reads for search

    def get_image(self, sha256: str) -> dict[str, Any] | None:
        with self._lock:
            cur = self.conn.execute("SELECT * FROM images WHERE sha256 = ?", (sha256,))
            row = cur.fetchone()
            if row is None:
                return None
            record = dict(zip([d[0] for d in cur.description], row, strict=True))
            record["captions"] = json.loads(record["captions"])
            record["provenance"] = (
                json.loads(record["provenance"]) if record["provenance"] else None
            )
            record["has_text"] = bool(record["has_text"])
            return self._add_paths_and_thumbnail(record)

    def counts(self) -> dict[str, int]:
        with self._lock:
            one = self.conn.execute
            return {
                "images": one("SELECT count(*) FROM images").fetchone()[0],
                "paths": one("SELECT count(*) FROM paths").fetchone()[0],
                "with_text": one("SELECT count(*) FROM images WHERE has_text").fetchone()[0],
            }

    def _columns(self) -> _Columns:
        """Every image's id, vector, date and has_text as arrays, cached in memory until a
        write (from any process) changes them. Search scans these instead of the tables."""
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        generation = (os.path.realpath(self.path), meta.get("database_id", 0), meta["generation"])
        if self._cache is None or self._cache.generation != generation:
            # Shared by every store of this process on this file (a server opens one per request).
            with _COLUMNS_LOCK:
                cached = _COLUMNS.get(generation[0])
            if cached is not None and cached.generation == generation:
                self._cache = cached
                return cached
            ids, blobs, dates, has_text = [], [], [], []
            zero = None
            rows = self.conn.execute(
                "SELECT i.id, e.vector, i.date, i.has_text FROM images i "
                "LEFT JOIN embeddings e ON e.image_id = i.id ORDER BY i.id"
            )
            for image_id, blob, date, text in rows:
                if blob is None:  # no embedding: never a semantic match
                    zero = zero or bytes(len(blobs[0]) if blobs else 4 * 384)
                    blob = zero
                ids.append(image_id)
                blobs.append(blob)
                dates.append(date_key(date))
                has_text.append(bool(text))
            matrix = (
                np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), -1) if ids else None
            )
            self._cache = _Columns(
                generation,
                np.array(ids, dtype=np.int64),
                VectorIndex(matrix),
                np.array(dates, dtype=np.int64),
                np.array(has_text, dtype=bool),
            )
            with _COLUMNS_LOCK:
                _COLUMNS[generation[0]] = self._cache
        return self._cache

    def _mask(self, cols: _Columns, filters: SearchFilters) -> np.ndarray | None:
        """Which rows of ``cols`` pass ``filters`` (None: no filters). The last one is kept:
        a hybrid search asks twice (text and semantic)."""
        if not filters.active:
            return None
        key = (cols.generation, filters)
        if self._last_mask is not None and self._last_mask[0] == key:
            return self._last_mask[1]
        mask = self._compute_mask(cols, filters)
        self._last_mask = (key, mask)
        return mask

    def _compute_mask(self, cols: _Columns, filters: SearchFilters) -> np.ndarray:
        mask = np.ones(len(cols.ids), dtype=bool)
        since, until = filters.date_bounds()
        if since is not None or until is not None:
            mask &= cols.dates >= 0  # an image without a date matches no date range
        if since is not None:
            mask &= cols.dates >= date_key(since)
        if until is not None:
            mask &= cols.dates <= date_key(until)
        if filters.has_text is not None:
            mask &= cols.has_text == filters.has_text
        folder = filters.folder_range()
        if folder is not None:
            rows = self.conn.execute(
                "SELECT DISTINCT image_id FROM paths WHERE path >= ? AND path < ?", folder
            )
            mask &= np.isin(cols.ids, np.fromiter((r[0] for r in rows), dtype=np.int64))
        return mask

    def _hashes(self, ids: list[int]) -> dict[int, str]:
        marks = ",".join("?" * len(ids))
        return dict(
            self.conn.execute(
                f"SELECT id, sha256 FROM images WHERE id IN ({marks})", ids
            ).fetchall()
        )

    def text_search(
        self, query: str, filters: SearchFilters, limit: int
    ) -> list[tuple[str, float]]:
        """Whole words (BM25 over caption, description and OCR text) first, then OCR text
        that contains a query word inside a longer run of characters (trigrams)."""
        match = fts_match(query)
        if match is None:
            return []
        with self._lock:
            cols = self._columns()
            mask = self._mask(cols, filters)
            rows = self._ranked(
                "images_fts", "bm25(images_fts, 2.0, 2.0, 1.0)", match, cols, mask, limit
            )
            substrings = [t for t in query_terms(query) if len(t) >= 3]  # trigrams need 3
            if len(rows) < limit and substrings:
                seen = {r[0] for r in rows}
                more = self._ranked(
                    "ocr_trigram", "bm25(ocr_trigram)",
                    " OR ".join(f'"{t}"' for t in substrings), cols, mask, limit + len(seen),
                )  # fmt: skip
                rows += [r for r in more if r[0] not in seen][: limit - len(rows)]
            if not rows:
                return []
            sha = self._hashes([r[0] for r in rows])
        return [
            (sha[rowid], -score) for rowid, score in rows if rowid in sha
        ]  # bm25: lower is better

    def _ranked(
        self,
        table: str,
        score: str,
        match: str,
        cols: _Columns,
        mask: np.ndarray | None,
        limit: int,
    ) -> list:
        """Rows ``(rowid, score)`` of an FTS query on ``table``, best (lowest) score first,
        ties by rowid, restricted to the rows ``mask`` lets through.

        A selective filter (a folder, a date range) goes into the query as a list of
        allowed rows, so only those are scored; a loose one (most rows pass) is applied
        to the ranked rows as they stream in, stopping at ``limit``.
        """
        sql = f"SELECT rowid, {score} AS score FROM {table} WHERE {table} MATCH ?"
        order = " ORDER BY score, rowid"
        if mask is None:
            return self.conn.execute(sql + order + " LIMIT ?", [match, limit]).fetchall()
        allowed = cols.ids[mask]
        if len(allowed) == 0:
            return []
        if len(allowed) <= _ALLOWED_LIST_MAX:
            return self.conn.execute(
                sql + " AND +rowid IN (SELECT value FROM json_each(?))" + order + " LIMIT ?",
                [match, json.dumps(allowed.tolist()), limit],
            ).fetchall()
        out: list = []
        cursor = self.conn.execute(sql + order, [match])
        while len(out) < limit:
            rows = cursor.fetchmany(1024)
            if not rows:
                break
            rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            pos = np.clip(np.searchsorted(cols.ids, rowids), 0, len(cols.ids) - 1)
            keep = np.flatnonzero((cols.ids[pos] == rowids) & mask[pos])
            out += [rows[k] for k in keep.tolist()]
        return out[:limit]

    def semantic_search(
        self, vector: np.ndarray, filters: SearchFilters, limit: int, min_similarity: float
    ) -> list[tuple[str, float]]:
        with self._lock:
            cols = self._columns()
            mask = self._mask(cols, filters)
            rows = np.flatnonzero(mask) if mask is not None else None
            index, scores = cols.vectors.top(vector, limit, rows)
            picked = [
                (int(cols.ids[i]), float(s))
                for i, s in zip(index, scores, strict=True)
                if s >= min_similarity
            ]
            if not picked:
                return []
            sha = self._hashes([i for i, _ in picked])
        return [(sha[i], s) for i, s in picked if i in sha]

    def hit_details(
        self, hashes: Sequence[str], query: str, filters: SearchFilters
    ) -> dict[str, dict]:
        if not hashes:
            return {}
        out: dict[str, dict] = {}
        marks = ",".join("?" * len(hashes))
        with self._lock:
            rows = self.conn.execute(
                "SELECT id, sha256, caption, ocr_text, has_text, date, camera, existing_description, "
                "json_extract(provenance, '$.random_weights'), confidence "
                f"FROM images WHERE sha256 IN ({marks})",
                list(hashes),
            ).fetchall()
            by_id = {}
            folder = filters.folder_range()
            for image_id, sha, caption, ocr, has_text, date, camera, desc, rw, conf in rows:
                paths = [
                    r[0]
                    for r in self.conn.execute(
                        "SELECT path FROM paths WHERE image_id = ? ORDER BY path", (image_id,)
                    )
                ]
                if folder is not None:  # show the copy inside the folder asked for first
                    paths.sort(key=lambda p: not (folder[0] <= p < folder[1]))
                if not paths:
                    continue
                by_id[image_id] = sha
                out[sha] = {
                    "caption": caption,
                    "paths": paths,
                    "snippet": highlight(ocr, query) or fallback_snippet(caption, ocr),
                    "has_text": bool(has_text),
                    "date": date,
                    "camera": camera,
                    "existing_description": desc,
                    "random_weights": bool(rw),
                    "confidence": conf,
                }
            match = fts_match(query)
            if match is not None and by_id:
                # FTS5 highlights the matching words; -1 lets it pick the best column.
                sql = (
                    "SELECT rowid, snippet(images_fts, -1, '[', ']', '…', 16) FROM images_fts "
                    f"WHERE images_fts MATCH ? AND rowid IN ({','.join('?' * len(by_id))})"
                )
                for rowid, snippet in self.conn.execute(sql, [match, *by_id]):
                    if snippet:
                        out[by_id[rowid]]["snippet"] = " ".join(snippet.split())
        return out


@dataclass(frozen=True)
class _Columns:
    generation: tuple[str, int, int]  # (file, database id, write generation)
    ids: np.ndarray  # sorted image ids
    vectors: VectorIndex  # one embedding per id (zeros where an image has none)
    dates: np.ndarray  # date_key() of each image's date, -1 when unknown
    has_text: np.ndarray


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), serialized within the process."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock):
        self.conn = conn
        self.lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.conn

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.lock.release()


def _statements(sql: str) -> list[str]:
    """Split a migration script into statements (keeping trigger bodies whole)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
