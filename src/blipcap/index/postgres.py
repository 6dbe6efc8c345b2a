"""The shared store: PostgreSQL with full-text search (tsvector) and pgvector.

``--db postgresql://user@host/dbname``. The database needs the pgvector
extension (``CREATE EXTENSION vector`` is run by the first migration; that
needs a role allowed to create it, once). Tables are prefixed ``blipcap_``.
Writers upsert with ``INSERT ... ON CONFLICT``, so several indexers can work
on one database at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .._optional import require
from ..errors import BlipcapError
from . import migrations
from .store import PathRecord, SearchFilters, Store, WriteBatch, fallback_snippet, query_terms

_MIGRATION_LOCK = 0x0B11CA9  # pg_advisory_xact_lock key: one migrator at a time
EXACT_FILTERED_BELOW = 5_000


def _vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{float(x):.8g}" for x in vector) + "]"


def _like_prefix(folder: str) -> str:
    return folder.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class PostgresStore(Store):
    def __init__(self, url: str):
        psycopg = require("psycopg", "index", "the PostgreSQL index")
        self.url = url
        try:
            self.conn = psycopg.connect(url, autocommit=True)
        except psycopg.OperationalError as exc:
            raise BlipcapError(
                f"cannot connect to {_redact(url)}: {str(exc).strip()}. Check the URL, that the server "
                "is running, and the credentials (or ~/.pgpass)."
            ) from None
        # psycopg prepares statements it runs often, and PostgreSQL may then use a generic
        # plan, which cannot see that a LIKE prefix or a date bound is selective.
        self.conn.execute("SET plan_cache_mode = force_custom_plan")
        self._migrate()

    def close(self) -> None:
        self.conn.close()

    def _migrate(self) -> None:
        psycopg = require("psycopg", "index")
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS blipcap_migrations "
                "(number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            cur.execute("SELECT number FROM blipcap_migrations")
            done = {row[0] for row in cur.fetchall()}
            if done - {n for n, _, _ in migrations.POSTGRES}:
                raise BlipcapError(
                    f"{_redact(self.url)} was written by a newer blipcap; upgrade blipcap."
                )
            for number, name, sql in migrations.POSTGRES:
                if number in done:
                    continue
                try:
                    cur.execute(sql)
                except psycopg.errors.FeatureNotSupported as exc:
                    raise BlipcapError(
                        f"the pgvector extension is not available on this server ({exc}). Install pgvector "
                        "(e.g. apt-get install postgresql-16-pgvector) and run CREATE EXTENSION vector once."
                    ) from None
                except psycopg.errors.UndefinedFile as exc:
                    raise BlipcapError(
                        f"the pgvector extension is not installed on this server ({str(exc).strip()}). "
                        "Install pgvector (e.g. apt-get install postgresql-16-pgvector)."
                    ) from None
                except psycopg.errors.InsufficientPrivilege as exc:
                    raise BlipcapError(
                        f"not allowed to create the index tables or the vector extension ({exc}). "
                        "Ask an administrator to run CREATE EXTENSION vector in this database."
                    ) from None
                cur.execute(
                    "INSERT INTO blipcap_migrations (number, name) VALUES (%s, %s)", (number, name)
                )

    def schema_version(self) -> int:
        return self.conn.execute("SELECT max(number) FROM blipcap_migrations").fetchone()[0]

    # ------------------------------------------------------------------ indexer reads

    def paths_under(self, roots: Sequence[str]) -> dict[str, PathRecord]:
        out: dict[str, PathRecord] = {}
        for root in roots:
            low, _ = SearchFilters(folder=root).folder_range()  # type: ignore[misc]
            rows = self.conn.execute(
                "SELECT p.path, i.sha256, p.size, p.mtime_ns FROM blipcap_paths p "
                "JOIN blipcap_images i ON i.id = p.image_id WHERE p.path = %s OR p.path LIKE %s",
                (root, _like_prefix(low)),
            )
            for path, sha, size, mtime in rows:
                out[path] = PathRecord(path, sha, size, mtime)
        return out

    def existing_hashes(self, hashes: Iterable[str]) -> set[str]:
        rows = self.conn.execute(
            "SELECT sha256 FROM blipcap_images WHERE sha256 = ANY(%s)", (list(hashes),)
        )
        return {r[0] for r in rows}

    def captions_for(self, paths: Sequence[str]) -> dict[str, tuple[str | None, dict | None]]:
        rows = self.conn.execute(
            "SELECT p.path, i.caption, i.provenance FROM blipcap_paths p "
            "JOIN blipcap_images i ON i.id = p.image_id WHERE p.path = ANY(%s)",
            (list(paths),),
        )
        return {path: (caption, prov) for path, caption, prov in rows}

    # ------------------------------------------------------------------ writes

    def write(self, batch: WriteBatch) -> list[str]:
        failed: list[str] = []
        candidates: set[int] = set()
        with self.conn.transaction(), self.conn.cursor() as cur:
            for rec in batch.images:
                cur.execute(
                    "INSERT INTO blipcap_images (sha256, width, height, format, bytes, caption, captions, ocr_text, "
                    "ocr_engine, has_text, existing_description, taken_at, date, camera, provenance, "
                    "embedding_model, embedding, confidence) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s::vector,%s) "
                    "ON CONFLICT (sha256) DO UPDATE SET caption = EXCLUDED.caption, captions = EXCLUDED.captions, "
                    "ocr_text = EXCLUDED.ocr_text, ocr_engine = EXCLUDED.ocr_engine, has_text = EXCLUDED.has_text, "
                    "existing_description = EXCLUDED.existing_description, provenance = EXCLUDED.provenance, "
                    "embedding_model = EXCLUDED.embedding_model, embedding = EXCLUDED.embedding, indexed_at = now(), "
                    "confidence = EXCLUDED.confidence "
                    "RETURNING id",
                    (
                        rec.sha256, rec.width, rec.height, rec.format, rec.bytes, rec.caption,
                        json.dumps(rec.captions), rec.ocr_text, rec.ocr_engine, rec.has_text,
                        rec.existing_description, rec.taken_at, rec.date, rec.camera,
                        json.dumps(rec.provenance) if rec.provenance is not None else None,
                        rec.embedding_model,
                        _vector_literal(rec.embedding) if rec.embedding is not None else None,
                        rec.confidence,
                    ),
                )  # fmt: skip
                image_id = cur.fetchone()[0]
                candidates.add(image_id)
                cur.execute(
                    "INSERT INTO blipcap_text (image_id, search) VALUES (%s, "
                    "setweight(to_tsvector('english', coalesce(%s, '')), 'A') "
                    "|| setweight(to_tsvector('english', coalesce(%s, '')), 'A') "
                    "|| setweight(to_tsvector('english', %s), 'B')) "
                    "ON CONFLICT (image_id) DO UPDATE SET search = EXCLUDED.search",
                    (image_id, rec.caption, rec.existing_description, rec.ocr_text),
                )
                if rec.thumbnail is not None:
                    cur.execute(
                        "INSERT INTO blipcap_thumbnails (image_id, jpeg) VALUES (%s, %s) "
                        "ON CONFLICT (image_id) DO UPDATE SET jpeg = EXCLUDED.jpeg",
                        (image_id, rec.thumbnail),
                    )
            for link in batch.links:
                cur.execute("SELECT id FROM blipcap_images WHERE sha256 = %s", (link.sha256,))
                row = cur.fetchone()
                if row is None:
                    failed.append(link.path)
                    continue
                cur.execute(
                    "INSERT INTO blipcap_paths AS p (path, image_id, size, mtime_ns) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (path) DO UPDATE SET image_id = EXCLUDED.image_id, size = EXCLUDED.size, "
                    "mtime_ns = EXCLUDED.mtime_ns "
                    "RETURNING (SELECT image_id FROM blipcap_paths WHERE path = p.path)",
                    (link.path, row[0], link.size, link.mtime_ns),
                )
                old = cur.fetchone()
                if old and old[0] is not None and old[0] != row[0]:
                    candidates.add(old[0])
            if batch.removals:
                cur.execute(
                    "DELETE FROM blipcap_paths WHERE path = ANY(%s) RETURNING image_id",
                    (list(batch.removals),),
                )
                candidates.update(r[0] for r in cur.fetchall())
            if candidates:
                cur.execute(
                    "DELETE FROM blipcap_images i WHERE i.id = ANY(%s) AND NOT EXISTS "
                    "(SELECT 1 FROM blipcap_paths p WHERE p.image_id = i.id)",
                    (sorted(candidates),),
                )
        return failed

    # ------------------------------------------------------------------ search

    def get_image(self, sha256: str) -> dict[str, Any] | None:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT id, sha256, width, height, format, bytes, caption, captions, ocr_text, ocr_engine, has_text, "
                "existing_description, taken_at, date, camera, provenance, confidence "
                "FROM blipcap_images WHERE sha256 = %s",
                (sha256,),
            )
            row = cur.fetchone()
            if row is None:
                return None
            record = dict(zip([d.name for d in cur.description], row, strict=True))
        return self._add_paths_and_thumbnail(record, "blipcap_", "%s")

    def counts(self) -> dict[str, int]:
        one = self.conn.execute
        return {
            "images": one("SELECT count(*) FROM blipcap_images").fetchone()[0],
            "paths": one("SELECT count(*) FROM blipcap_paths").fetchone()[0],
            "with_text": one("SELECT count(*) FROM blipcap_images WHERE has_text").fetchone()[0],
        }

    def _filter_sql(self, filters: SearchFilters) -> tuple[str, list[Any]]:
        clauses, params = [], []
        folder = filters.folder_range()
        if folder is not None:
            # A prefix range on the path index, then a semi-join: not one lookup per image.
            clauses.append(
                "i.id IN (SELECT fp.image_id FROM blipcap_paths fp WHERE fp.path LIKE %s)"
            )
            params.append(_like_prefix(folder[0]))
        since, until = filters.date_bounds()
        if since is not None:
            clauses.append("i.date >= %s")
            params.append(since)
        if until is not None:
            clauses.append("i.date <= %s")
            params.append(until)
        if filters.has_text is not None:
            clauses.append("i.has_text = %s")
            params.append(filters.has_text)
        return " AND ".join(clauses), params

    def text_search(
        self, query: str, filters: SearchFilters, limit: int
    ) -> list[tuple[str, float]]:
        tsquery = pg_tsquery(query)
        if tsquery is None:
            return []
        where, params = self._filter_sql(filters)
        # Rank in the narrow text table first; join the image rows for the few that are kept.
        inner = (
            "SELECT t.image_id, ts_rank(t.search, q) AS score FROM blipcap_text t, "
            "to_tsquery('english', %s) q WHERE t.search @@ q"
            + (
                f" AND t.image_id IN (SELECT i.id FROM blipcap_images i WHERE {where})"
                if where
                else ""
            )
            + " ORDER BY score DESC, t.image_id LIMIT %s"
        )
        rows = self.conn.execute(
            f"SELECT i.sha256, r.score FROM ({inner}) r JOIN blipcap_images i ON i.id = r.image_id "
            "ORDER BY r.score DESC, r.image_id",
            [tsquery, *params, limit],
        ).fetchall()
        return [(sha, float(score)) for sha, score in rows]

    def semantic_search(
        self, vector: np.ndarray, filters: SearchFilters, limit: int, min_similarity: float
    ) -> list[tuple[str, float]]:
        where, params = self._filter_sql(filters)
        literal = _vector_literal(vector)
        exact = False
        if where:
            # Few rows pass the filters: score them all (exact, and faster than an HNSW
            # walk that must skip most of the graph). Many: walk the index.
            cur = self.conn.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM blipcap_images i WHERE {where} LIMIT %s) c",
                [*params, EXACT_FILTERED_BELOW],
            )
            exact = cur.fetchone()[0] < EXACT_FILTERED_BELOW
        # "+ 0" keeps the planner off the HNSW index for the exact variant.
        order = "(i.embedding <=> %s::vector) + 0" if exact else "i.embedding <=> %s::vector"
        with self.conn.transaction(), self.conn.cursor() as cur:
            # With filters, let the HNSW scan keep going until enough rows pass them (pgvector >= 0.8).
            cur.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
            cur.execute(
                "SELECT i.sha256, 1 - (i.embedding <=> %s::vector) AS similarity FROM blipcap_images i "
                "WHERE i.embedding IS NOT NULL"
                + (f" AND {where}" if where else "")
                + f" ORDER BY {order} LIMIT %s",
                [literal, *params, literal, limit],
            )
            rows = cur.fetchall()
        hits = [(sha, float(sim)) for sha, sim in rows if sim >= min_similarity]
        return sorted(hits, key=lambda h: -h[1])  # relaxed_order may return them slightly unsorted

    def hit_details(
        self, hashes: Sequence[str], query: str, filters: SearchFilters
    ) -> dict[str, dict]:
        if not hashes:
            return {}
        tsquery = pg_tsquery(query) or ""
        rows = self.conn.execute(
            "SELECT i.sha256, i.caption, i.ocr_text, i.has_text, i.date, i.camera, i.existing_description, "
            "(i.provenance->>'random_weights')::boolean, i.confidence, "
            "(SELECT array_agg(path ORDER BY path) FROM blipcap_paths p WHERE p.image_id = i.id), "
            "CASE WHEN %s = '' THEN NULL ELSE ts_headline('english', "
            "coalesce(nullif(i.ocr_text, ''), i.caption, ''), to_tsquery('english', %s), "
            "'StartSel=[, StopSel=], MaxWords=24, MinWords=8') END "
            "FROM blipcap_images i WHERE i.sha256 = ANY(%s)",
            (tsquery, tsquery, list(hashes)),
        ).fetchall()
        out: dict[str, dict] = {}
        folder = filters.folder_range()
        for (
            sha,
            caption,
            ocr,
            has_text,
            date,
            camera,
            desc,
            random_weights,
            confidence,
            paths,
            headline,
        ) in rows:
            paths = list(paths or [])
            if not paths:
                continue
            if folder is not None:
                paths.sort(key=lambda p: not p.startswith(folder[0]))
            snippet = fallback_snippet(caption, ocr)
            if headline and "[" in headline:
                snippet = " ".join(headline.split())
            out[sha] = {
                "caption": caption,
                "paths": paths,
                "snippet": snippet,
                "has_text": bool(has_text),
                "date": date,
                "camera": camera,
                "existing_description": desc,
                "random_weights": bool(random_weights),
                "confidence": confidence,
            }
        return out


def pg_tsquery(query: str) -> str | None:
    """A to_tsquery() expression matching any of the query's words (see sqlite.fts_match)."""
    terms = query_terms(query)
    if not terms:
        return None
    return " | ".join(f"'{t}'" for t in dict.fromkeys(terms))


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url
