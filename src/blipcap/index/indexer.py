"""Walk folders and keep the index in step with them, captioning new content only.

Every image is keyed by the SHA-256 of its bytes. Size and modification time
are only a fast "surely unchanged" pre-check; anything else is hashed. So a
renamed or copied file is linked to the caption it already has, an edited one
is captioned again, and a removed one is pruned. New content is captioned in
batches, and each batch (captions, OCR text, embeddings, thumbnails, paths) is
written in one transaction: a kill -9 loses at most the batch in flight.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BlipcapError, InputError
from ..images import DEFAULT_LIMITS, load_image, open_regular_file
from ..options import CaptionOptions
from ..results import CaptionModel
from . import media, xmp
from .store import ImageRecord, PathRecord, Store, WriteBatch

LINK_FLUSH = 1000  # renames/copies/touches need no model: write them in big batches


@dataclass
class IndexOptions:
    batch_size: int = 8
    """Images captioned (and committed) together."""
    ocr_engine: str | None = None
    """"rapidocr", "tesseract" or None (no OCR)."""
    ocr_detect_px: int | None = None
    """Longest side RapidOCR's text detector sees (None: its default, 2000 px)."""
    write_xmp: bool = False
    recaption: bool = False
    """Caption again content that already has a caption (e.g. after changing the model)."""
    include_hidden: bool = False
    max_bytes: int = DEFAULT_LIMITS.max_bytes
    thumbnail_px: int = media.THUMBNAIL_PX
    caption_options: CaptionOptions | None = None
    """How images are captioned (None: the default preset)."""


@dataclass
class IndexSummary:
    scanned: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    captioned: int = 0
    """Images the caption model ran on (model invocations, counted per image)."""
    xmp_written: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("errors")
        return d


@dataclass
class _New:
    link: PathRecord
    data: bytes
    existed: bool
    extra: list[tuple[PathRecord, bool]] = field(default_factory=list)


class Indexer:
    """Bring ``store`` in step with folders. ``captioner`` follows the Captioner contract
    (``caption(images, **kwargs) -> list[Caption]``); ``embedder`` has ``embed(texts)``."""

    def __init__(
        self,
        store: Store,
        captioner: CaptionModel,
        embedder: Any = None,
        options: IndexOptions | None = None,
        *,
        progress: bool = False,
        on_error: Callable[[str, str], None] | None = None,
    ):
        if embedder is None:
            from .embeddings import get_embedder

            embedder = get_embedder()
        self.store = store
        self.captioner = captioner
        self.embedder = embedder
        self.options = options or IndexOptions()
        if self.options.batch_size < 1:
            raise BlipcapError("batch size must be at least 1")
        self.progress = progress
        self.on_error = on_error

    # ------------------------------------------------------------------ public

    def run(self, roots: Sequence[str | os.PathLike[str]]) -> IndexSummary:
        self.summary = IndexSummary()
        self._batch = WriteBatch()
        self._counts: list[tuple[PathRecord, bool]] = []  # links awaiting commit: (link, existed)
        self._new: dict[str, _New] = {}
        self._recaptioned: set[str] = set()
        self._xmp_queue: list[str] = []
        files, walked, unreadable = self._walk([os.path.abspath(os.fspath(r)) for r in roots])
        known = self.store.paths_under(walked) if walked else {}
        protected: set[str] = set()  # failed to read: keep what the index has for them
        bar = _bar(len(files), self.progress)
        try:
            for path in files:
                self.summary.scanned += 1
                if not self._plan(path, known.get(path)):
                    protected.add(path)
                if bar is not None:
                    bar.update(1)
            self._flush_new()
            self._flush_links()
        finally:
            if bar is not None:
                bar.close()
        self._prune(known, set(files), protected, unreadable)
        if self.options.write_xmp:
            self._write_xmp(self._xmp_queue)
        return self.summary

    # ------------------------------------------------------------------ walking

    def _walk(self, roots: list[str]) -> tuple[list[str], list[str], list[str]]:
        files: list[str] = []
        walked: list[str] = []
        unreadable: list[str] = []
        for root in roots:
            if os.path.isfile(root):
                files.append(root)
                walked.append(root)
            elif os.path.isdir(root):
                walked.append(root)

                def onerror(exc: OSError) -> None:
                    unreadable.append(exc.filename)
                    self._fail(exc.filename, f"cannot list folder: {exc.strerror}")

                for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
                    dirnames[:] = sorted(
                        d for d in dirnames if self.options.include_hidden or not d.startswith(".")
                    )
                    for name in sorted(filenames):
                        if not self.options.include_hidden and name.startswith("."):
                            continue
                        if os.path.splitext(name)[1].lower() in media.IMAGE_EXTENSIONS:
                            files.append(os.path.join(dirpath, name))
            else:
                # A missing root (an unmounted drive) must not prune everything under it.
                self._fail(root, "no such file or folder; nothing under it was pruned")
        return list(dict.fromkeys(files)), walked, unreadable

    # ------------------------------------------------------------------ planning

    def _plan(self, path: str, rec: PathRecord | None) -> bool:
        """Decide what one file needs. Returns False when it could not be read."""
        try:
            st = os.stat(path)
        except OSError as exc:
            self._fail(path, f"cannot read: {exc.strerror}")
            return False
        if (
            rec is not None
            and rec.size == st.st_size
            and rec.mtime_ns == st.st_mtime_ns
            and not self.options.recaption
        ):
            self.summary.unchanged += 1
            self._queue_xmp(path)
            return True
        try:
            sha, data = media.sha256_file(path, self.options.max_bytes)
        except (OSError, InputError) as exc:
            self._fail(
                path, str(exc) if isinstance(exc, InputError) else f"cannot read: {exc.strerror}"
            )
            return False
        link = PathRecord(path, sha, st.st_size, st.st_mtime_ns)
        existed = rec is not None
        recaption = self.options.recaption and sha not in self._recaptioned
        if rec is not None and rec.sha256 == sha and not recaption:
            self.summary.unchanged += 1  # touched, same bytes: refresh size/mtime only
            self._batch.links.append(link)
            self._queue_xmp(path)
        elif sha in self._new:
            self._new[sha].extra.append((link, existed))
        elif not recaption and self.store.existing_hashes([sha]):
            self._batch.links.append(link)  # a copy or rename of content we have
            self._counts.append((link, existed))
        else:
            self._recaptioned.add(sha)
            self._new[sha] = _New(link, data, existed)
            if len(self._new) >= self.options.batch_size:
                self._flush_new()
        if len(self._batch.links) >= LINK_FLUSH:
            self._flush_links()
        return True

    # ------------------------------------------------------------------ captioning

    def _flush_new(self) -> None:
        items = list(self._new.values())
        self._new.clear()
        if not items:
            return
        ready: list[tuple[_New, Any, media.FileMeta, Any]] = []
        for item in items:
            try:
                image = load_image(item.data, name=item.link.path)
            except InputError as exc:
                for link, _ in [(item.link, item.existed), *item.extra]:
                    self._fail(link.path, str(exc))
                continue
            ocr = self._ocr(item.link.path, image)
            ready.append((item, image, media.read_meta(item.data), ocr))
        if ready:
            results = self.captioner.caption(
                [image for _, image, _, _ in ready],
                batch_size=len(ready),
                options=self.options.caption_options,
            )
            self.summary.captioned += len(ready)
        else:
            results = []
        records: list[ImageRecord] = []
        for (item, image, meta, ocr), result in zip(ready, results, strict=True):
            if result.error is not None:
                for link, _ in [(item.link, item.existed), *item.extra]:
                    self._fail(link.path, result.error.message)
                continue
            sidecar = xmp.read_sidecar(item.link.path)
            existing = meta.embedded_description
            if sidecar is not None and sidecar.description and not sidecar.machine_generated:
                existing = sidecar.description
            records.append(
                ImageRecord(
                    sha256=item.link.sha256,
                    width=image.width,
                    height=image.height,
                    format=meta.format,
                    bytes=len(item.data),
                    caption=result.caption,
                    captions=list(result.captions) or ([result.caption] if result.caption else []),
                    ocr_text=ocr.text if ocr is not None else "",
                    ocr_engine=ocr.engine if ocr is not None else None,
                    existing_description=existing,
                    taken_at=meta.taken_at,
                    date=meta.taken_at or media.mtime_iso(item.link.mtime_ns),
                    camera=meta.camera,
                    provenance=asdict(result.provenance) if result.provenance is not None else None,
                    thumbnail=media.thumbnail_jpeg(image, self.options.thumbnail_px),
                    confidence=result.confidence.score if result.confidence else None,
                )
            )
            self._batch.links.append(item.link)
            self._counts.append((item.link, item.existed))
            for link, existed in item.extra:
                self._batch.links.append(link)
                self._counts.append((link, existed))
            self._queue_xmp(item.link.path, *(link.path for link, _ in item.extra))
        if records:
            vectors = self.embedder.embed([r.search_text() for r in records])
            for rec, vec in zip(records, vectors, strict=True):
                rec.embedding = vec
                rec.embedding_model = getattr(self.embedder, "name", None)
        self._batch.images.extend(records)
        self._flush_links()

    def _ocr(self, path: str, image: Any) -> Any:
        if not self.options.ocr_engine:
            return None
        from ..documents import ocr_image

        try:
            return ocr_image(image, self.options.ocr_engine, detect_px=self.options.ocr_detect_px)
        except BlipcapError as exc:
            # OCR is an extra: the image is still indexed by its caption.
            if self.on_error is not None:
                self.on_error(path, f"OCR failed, indexed without text: {exc}")
            return None

    # ------------------------------------------------------------------ writing

    def _flush_links(self) -> None:
        if not len(self._batch):
            return
        failed = set(self.store.write(self._batch))
        for link, existed in self._counts:
            if link.path in failed:
                self._fail(
                    link.path, "its content was removed by another indexer meanwhile; run again"
                )
            elif existed:
                self.summary.updated += 1
            else:
                self.summary.added += 1
        self._batch = WriteBatch()
        self._counts = []

    def _prune(
        self,
        known: dict[str, PathRecord],
        seen: set[str],
        protected: set[str],
        unreadable: list[str],
    ) -> None:
        gone = []
        for path in known:
            if path in seen or path in protected or any(_under(path, d) for d in unreadable):
                continue
            if os.path.lexists(path):  # not walked (hidden, or appeared since): not ours to judge
                continue
            gone.append(path)
        if gone:
            self.store.write(WriteBatch(removals=gone))
            self.summary.removed += len(gone)

    def _write_xmp(self, paths: list[str]) -> None:
        captions = self.store.captions_for(paths)
        for path in paths:
            caption, provenance = captions.get(path, (None, None))
            if not caption:
                continue
            try:
                current = xmp.read_sidecar(path)
                if current is not None and current.caption == caption:
                    continue
                embedded = None if current is not None else _embedded_description(path)
                xmp.write_sidecar(path, caption, provenance, embedded_description=embedded)
                self.summary.xmp_written += 1
            except (OSError, ValueError) as exc:
                self._fail(path, f"could not write the XMP sidecar: {exc}")

    def _queue_xmp(self, *paths: str) -> None:
        if self.options.write_xmp:
            self._xmp_queue.extend(paths)

    def _fail(self, path: str, message: str) -> None:
        self.summary.failed += 1
        self.summary.errors.append({"path": path, "message": message})
        if self.on_error is not None:
            self.on_error(path, message)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _embedded_description(path: str) -> str | None:
    try:
        with open_regular_file(path) as fh:
            head = fh.read(4 * 2**20)  # XMP/EXIF live in the first segments
    except (OSError, InputError):
        return None
    return media.read_meta(head).embedded_description


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="indexing", file=sys.stderr, dynamic_ncols=True)
