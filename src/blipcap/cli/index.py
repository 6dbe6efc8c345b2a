"""``blipcap index`` and ``blipcap search``: make photo folders searchable by what is in them."""

from __future__ import annotations

import json
import sys

import click

from ..errors import BlipcapError
from ..results import escape_name, printable
from .common import (
    cli_errors,
    decoding_options,
    json_option,
    model_options,
    number_option,
    open_captioner,
    pop_caption_options,
    progress_option,
    show_progress,
    warn,
)

DB_HELP = (
    "SQLite file or postgresql:// URL "
    "[env BLIPCAP_DB; default $XDG_DATA_HOME/blipcap/index.db, i.e. ~/.local/share/blipcap/index.db]."
)


def _db_option(f):
    return click.option(
        "--db", envvar="BLIPCAP_DB", default=None, metavar="PATH|URL", help=DB_HELP
    )(f)


def _check_db_folder(db: str | None) -> None:
    """Refuse an explicit SQLite ``--db`` whose folder does not exist (a typo must not make folders).

    The default location (under ``$XDG_DATA_HOME``) is still created on first use.
    """
    from pathlib import Path

    from ..index.open import is_postgres_url

    if db is None or is_postgres_url(db):
        return
    folder = Path(db).expanduser().absolute().parent
    if not folder.is_dir():
        raise click.BadParameter(
            f"the folder {folder} does not exist; create it first (mkdir -p {folder}) "
            "or give a path in an existing folder",
            param_hint="--db",
        )


def _ocr_engine(choice: str) -> str | None:
    if choice == "none":
        return None
    if choice != "auto":
        return choice
    from .._optional import available

    if available("rapidocr"):
        return "rapidocr"
    warn("OCR is off: install it with pip install 'blipcap[ocr]' to make text in images searchable")
    return None


class _LazyCaptioner:
    """Loads the model on the first image that needs a caption: a re-run over folders
    that did not change never pays for loading it."""

    def __init__(self, factory):
        self._factory = factory
        self._captioner = None

    def caption(self, images, **kwargs):
        if self._captioner is None:
            self._captioner = self._factory()
        return self._captioner.caption(images, **kwargs)


@click.command(
    "index",
    epilog="""\b
Examples:
  blipcap index ~/Pictures                          # caption new photos into the default index
  blipcap index ~/Pictures /media/phone --json      # JSON Lines; the last line is the summary
  blipcap index ~/Pictures --write-xmp              # also write captions into XMP sidecars
  blipcap index photos/ --db photos.db --ocr tesseract
  blipcap index photos/ --db postgresql://user@host/photos

Run it again whenever the folders change: only new or edited images are
captioned, renamed and copied files keep their captions, and removed files
leave the index. Exit status: 0 when every image was indexed, 1 when some
failed (listed on stderr, or as {"path", "error"} records with --json), 2 on
usage or configuration errors, 3 when the model could not be found or loaded.
""",
)
@click.argument("paths", nargs=-1, required=True, type=click.Path(), metavar="PATH...")
@_db_option
@json_option("JSON Lines: failures, then one summary object.")
@click.option(
    "--write-xmp", is_flag=True, help="Write each caption into an XMP sidecar (photo.jpg.xmp)."
)
@click.option(
    "--ocr",
    type=click.Choice(["auto", "rapidocr", "tesseract", "none"]),
    default="auto",
    show_default=True,
    help="Read text in images (screenshots, scans, signs); auto = rapidocr when installed, "
    "detecting text at 960 px (rapidocr: 2000 px, slower, finds smaller text).",
)
@click.option("--recaption", is_flag=True, help="Caption again images that already have a caption.")
@number_option("--batch-size", click.IntRange(min=1), 8, "Images captioned per transaction.")
@click.option("--include-hidden", is_flag=True, help="Also index hidden files and folders (.name).")
@progress_option
@model_options
@decoding_options
@cli_errors
def index(
    paths,
    db,
    as_json,
    write_xmp,
    ocr,
    recaption,
    batch_size,
    include_hidden,
    progress,
    model,
    backend,
    device,
    dtype,
    **flags,
):
    """Index images under PATH... (folders are walked recursively) for `blipcap search`.

    Each image is keyed by the SHA-256 of its bytes and stored with its
    caption, the text in it (OCR), its size, EXIF date and camera, a small
    thumbnail and where the caption came from (model, revision, options).
    """
    from ..documents import PHOTO_DETECT_PX
    from ..index import Indexer, IndexOptions, open_store

    _check_db_folder(db)
    caption_options = pop_caption_options(flags)
    options = IndexOptions(
        batch_size=batch_size,
        ocr_engine=_ocr_engine(ocr),
        ocr_detect_px=PHOTO_DETECT_PX if ocr == "auto" else None,
        write_xmp=write_xmp,
        recaption=recaption,
        include_hidden=include_hidden,
        caption_options=caption_options,
    )
    captioner = _LazyCaptioner(
        lambda: open_captioner(model, backend, device, dtype, meaningless="its captions")
    )

    def on_error(path: str, message: str) -> None:
        path, message = escape_name(path), printable(message)
        if as_json:
            click.echo(json.dumps({"path": path, "error": message}, ensure_ascii=False))
        else:
            warn(f"{path}: {message}")

    with open_store(db) as store:
        indexer = Indexer(
            store,
            captioner,
            options=options,
            progress=show_progress(progress),
            on_error=on_error,
        )
        try:
            summary = indexer.run(list(paths))
        except KeyboardInterrupt:
            warn(
                "interrupted: every finished batch is saved; run the same command again to continue"
            )
            sys.exit(130)
        url = store.url
    record = {**summary.to_dict(), "db": url}
    if as_json:
        click.echo(json.dumps(record))
    else:
        counts = ", ".join(
            f"{k} {record[k]}"
            for k in ("scanned", "added", "updated", "unchanged", "removed", "failed")
        )
        click.echo(f"{counts}; captioned {summary.captioned} image(s) -> {url}")
    if summary.failed:
        sys.exit(1)


@click.command(
    "search",
    epilog="""\b
Examples:
  blipcap search "dog on a beach"
  blipcap search invoice --has-text --since 2024-01-01 --limit 5
  blipcap search "birthday cake" --folder ~/Pictures/2023 --json | jq .path
  blipcap search receipt --mode text               # words only (BM25), no embeddings

Hybrid search ranks images by the words of captions and OCR text (SQLite FTS5
BM25, or PostgreSQL tsvector) and by meaning (all-MiniLM-L6-v2 embeddings),
fused by reciprocal rank. Exit status: 0 (also when nothing matched), 2 on
usage errors (e.g. no index yet).
""",
)
@click.argument("query", nargs=-1, required=True)
@_db_option
@click.option("--limit", "-k", type=click.IntRange(min=1), default=10, show_default=True)
@json_option("JSON Lines, one result per line.")
@click.option(
    "--folder",
    type=click.Path(file_okay=False),
    default=None,
    help="Only images under this folder.",
)
@click.option(
    "--since",
    default=None,
    metavar="DATE",
    help="Taken on or after (YYYY-MM-DD); EXIF date, else file time.",
)
@click.option("--until", default=None, metavar="DATE", help="Taken on or before (YYYY-MM-DD).")
@click.option(
    "--has-text/--no-text",
    "has_text",
    default=None,
    help="Only images with (or without) text in them.",
)
@click.option(
    "--mode", type=click.Choice(["hybrid", "text", "semantic"]), default="hybrid", show_default=True
)
@click.option(
    "--min-similarity",
    type=click.FloatRange(-1, 1),
    default=None,
    help="Drop semantic matches below this cosine similarity [default 0.2].",
)
@cli_errors
def search(query, db, limit, as_json, folder, since, until, has_text, mode, min_similarity):
    """Find indexed images by what is in them: captions, text in the image, descriptions."""
    from ..index import SearchFilters, open_store
    from ..index.store import DEFAULT_MIN_SIMILARITY

    text = " ".join(query)
    filters = SearchFilters(folder=folder, since=since, until=until, has_text=has_text)
    try:
        store = open_store(db, create=False)
    except BlipcapError as exc:
        raise click.UsageError(str(exc)) from exc
    with store:
        hits = store.search(
            text,
            filters=filters,
            limit=limit,
            mode=mode,
            min_similarity=DEFAULT_MIN_SIMILARITY if min_similarity is None else min_similarity,
        )
    if not hits:
        warn(f"no matches for {text!r}")
    for rank, hit in enumerate(hits, start=1):
        if as_json:
            click.echo(json.dumps(hit.to_dict(), ensure_ascii=False))
            continue
        click.echo(f"{rank}. {hit.path}  (score {hit.score:.4f})")
        label = (
            "caption [random-weight test model, meaningless]" if hit.random_weights else "caption"
        )
        if hit.caption:
            click.echo(f"   {label}: {hit.caption}")
        if hit.existing_description:
            click.echo(f"   description: {hit.existing_description}")
        if hit.snippet and hit.snippet not in (hit.caption, hit.existing_description):
            click.echo(f"   {hit.snippet}")
