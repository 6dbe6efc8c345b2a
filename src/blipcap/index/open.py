"""Open an index: the factory that chooses the store for a location.

:mod:`.store` defines the interface; :mod:`.sqlite` and :mod:`.postgres` implement
it and import it. This module imports each store only when it is asked for, so
the stores never import the module that chooses between them (no import cycle),
and the PostgreSQL driver is needed only for ``postgresql://`` URLs.
"""

from __future__ import annotations

import os
from pathlib import Path

from .store import Store


def default_db_path() -> Path:
    """$BLIPCAP_DB, else $XDG_DATA_HOME/blipcap/index.db (~/.local/share/blipcap/index.db)."""
    env = os.environ.get("BLIPCAP_DB")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "blipcap" / "index.db"


def is_postgres_url(db: str | os.PathLike[str]) -> bool:
    return str(db).startswith(("postgresql://", "postgres://"))


def open_store(db: str | os.PathLike[str] | None = None, *, create: bool = True) -> Store:
    """Open the index at ``db``: a SQLite file path (default) or a ``postgresql://`` URL."""
    if db is None:
        db = default_db_path()
    if is_postgres_url(db):
        from .postgres import PostgresStore

        return PostgresStore(str(db))
    from .sqlite import SQLiteStore

    return SQLiteStore(db, create=create)
