"""Reference and prediction files: COCO captions, Karpathy splits, NoCaps, BLIP's lists, COCO results.

Every reader returns :class:`Annotations`: the images to caption (with the
file name the annotation file gives, if any) and their reference captions.
Image ids keep the type the file uses (COCO and NoCaps use integers) so that
predictions written back in COCO results format can be uploaded to an
evaluation server unchanged.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EvaluationError

ImageId = int | str


@dataclass(frozen=True)
class ImageRef:
    """One image of an evaluation set."""

    image_id: ImageId
    file_name: str | None
    """Path relative to the images folder as the annotation file gives it (None: not named)."""
    domain: str | None = None
    """NoCaps: in-domain, near-domain or out-domain."""


@dataclass
class Annotations:
    """The images of an evaluation set and their reference captions, in file order."""

    format: str
    """coco, nocaps, karpathy or blip."""
    source: str
    images: list[ImageRef]
    references: dict[ImageId, list[str]]
    split: str | None = None
    domains: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def limit(self, n: int | None) -> Annotations:
        """The first ``n`` images only (a quick check; scores on a subset are not the paper's)."""
        if n is None or n >= len(self.images):
            return self
        images = self.images[:n]
        return Annotations(
            format=self.format,
            source=self.source,
            images=images,
            references={im.image_id: self.references[im.image_id] for im in images},
            split=self.split,
            domains=sorted({im.domain for im in images if im.domain}),
        )


def _load_json(path: str | Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise EvaluationError(f"{what} {str(path)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise EvaluationError(
            f"{what} {str(path)!r} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg})"
        ) from None


def read_annotations(path: str | Path, split: str | None = "test") -> Annotations:
    """Read a reference-caption file, detecting its format.

    ``split`` selects the Karpathy split (``train``, ``restval``, ``val``,
    ``test``; ``None`` or ``"all"`` keeps every image); other formats hold one
    split per file and ignore it.
    """
    data = _load_json(path, "annotation file")
    source = str(path)
    if isinstance(data, list):
        return _read_blip_list(data, source)
    if not isinstance(data, dict):
        raise EvaluationError(f"annotation file {source!r}: expected a JSON object or list")
    images = data.get("images")
    if (
        isinstance(images, list)
        and images
        and isinstance(images[0], dict)
        and "sentences" in images[0]
    ):
        return _read_karpathy(data, source, split)
    if isinstance(images, list) and "annotations" in data:
        return _read_coco(data, source)
    if isinstance(images, list):
        raise EvaluationError(
            f"annotation file {source!r} lists images but has no reference captions "
            "(no 'annotations'): it looks like a test split whose captions are held by an "
            "evaluation server. Caption it with --predictions-out FILE and upload that file."
        )
    raise EvaluationError(
        f"annotation file {source!r} is not a format blipcap reads. Expected COCO captions "
        "({'images': [...], 'annotations': [...]}, also NoCaps), Karpathy's dataset_coco.json "
        "({'images': [{'sentences': ...}]}) or BLIP's coco_karpathy_*.json list; "
        f"found keys: {', '.join(sorted(data)) or 'none'}"
    )


def _read_coco(data: dict[str, Any], source: str) -> Annotations:
    images: list[ImageRef] = []
    seen: set[ImageId] = set()
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im:
            raise EvaluationError(f"annotation file {source!r}: images[{i}] has no 'id'")
        if im["id"] in seen:
            raise EvaluationError(
                f"annotation file {source!r}: image id {im['id']!r} appears twice"
            )
        seen.add(im["id"])
        images.append(ImageRef(im["id"], im.get("file_name"), im.get("domain")))
    references: dict[ImageId, list[str]] = {im.image_id: [] for im in images}
    for i, ann in enumerate(data["annotations"]):
        try:
            image_id, caption = ann["image_id"], ann["caption"]
        except (KeyError, TypeError):
            raise EvaluationError(
                f"annotation file {source!r}: annotations[{i}] needs 'image_id' and 'caption'"
            ) from None
        if image_id not in references:
            raise EvaluationError(
                f"annotation file {source!r}: annotations[{i}] refers to image id {image_id!r}, "
                "which is not in 'images'"
            )
        references[image_id].append(str(caption))
    without = [im.image_id for im in images if not references[im.image_id]]
    if without:
        # An image nobody described cannot be scored; pycocoevalcap would fail on it.
        images = [im for im in images if references[im.image_id]]
        for image_id in without:
            del references[image_id]
    if not images:
        raise EvaluationError(f"annotation file {source!r} has no image with a reference caption")
    domains = sorted({im.domain for im in images if im.domain})
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    is_nocaps = bool(domains) or "nocaps" in json.dumps(info).lower()
    return Annotations("nocaps" if is_nocaps else "coco", source, images, references, None, domains)


def _read_karpathy(data: dict[str, Any], source: str, split: str | None) -> Annotations:
    images: list[ImageRef] = []
    references: dict[ImageId, list[str]] = {}
    splits: set[str] = set()
    for i, im in enumerate(data["images"]):
        splits.add(str(im.get("split")))
        if split not in (None, "all") and im.get("split") != split:
            continue
        # COCO files carry the COCO id (what results files use); Flickr files only imgid.
        image_id = im.get("cocoid", im.get("imgid", i))
        name = im.get("filename")
        if name and im.get("filepath"):
            name = f"{im['filepath']}/{name}"
        sentences = [s.get("raw") or " ".join(s.get("tokens", [])) for s in im["sentences"]]
        images.append(ImageRef(image_id, name))
        references[image_id] = [str(s) for s in sentences]
    if not images:
        raise EvaluationError(
            f"annotation file {source!r} has no image in split {split!r}; "
            f"its splits are: {', '.join(sorted(splits))} (use --split)"
        )
    label = None if split in (None, "all") else split
    return Annotations("karpathy", source, images, references, label)


_DIGITS = re.compile(r"(\d+)\.\w+$")


def _read_blip_list(data: list[Any], source: str) -> Annotations:
    # salesforce/BLIP coco_karpathy_{val,test}.json: [{"image": "val2014/x.jpg", "caption": [...]}]
    # (the train file has one caption per entry, grouped here by image).
    images: list[ImageRef] = []
    references: dict[ImageId, list[str]] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "image" not in entry or "caption" not in entry:
            raise EvaluationError(
                f"annotation file {source!r}: entry {i} needs 'image' and 'caption' "
                "(BLIP's coco_karpathy_*.json layout)"
            )
        name = str(entry["image"])
        if "image_id" in entry:
            image_id: ImageId = entry["image_id"]
        else:
            # As BLIP's loader does: the COCO id is the number at the end of the file name.
            m = _DIGITS.search(name)
            image_id = int(m.group(1)) if m else name
        captions = entry["caption"] if isinstance(entry["caption"], list) else [entry["caption"]]
        if image_id not in references:
            images.append(ImageRef(image_id, name))
            references[image_id] = []
        references[image_id].extend(str(c) for c in captions)
    if not images:
        raise EvaluationError(f"annotation file {source!r} is an empty list")
    return Annotations("blip", source, images, references)


# --- images on disk ---------------------------------------------------------------------------

_COCO_ID = re.compile(r"(?:^|_)(\d{12})\.jpg$", re.IGNORECASE)


def locate_images(
    annotations: Annotations, images_dir: str | Path
) -> tuple[dict[ImageId, Path], list[ImageRef]]:
    """Find each image under ``images_dir``. Returns (found paths by id, images not found).

    Tried in order: the annotation's relative path; its base name; and, for
    files that name no image (such as BLIP's ``coco_karpathy_test_gt.json``),
    the COCO naming convention ``[COCO_<set>_]<12-digit id>.jpg`` anywhere below
    the folder.
    """
    root = Path(images_dir)
    if not root.is_dir():
        raise EvaluationError(f"--images {str(root)!r} is not a folder")
    found: dict[ImageId, Path] = {}
    missing: list[ImageRef] = []
    by_name: dict[str, Path] | None = None
    by_coco_id: dict[int, Path] | None = None

    def index() -> tuple[dict[str, Path], dict[int, Path]]:
        names: dict[str, Path] = {}
        ids: dict[int, Path] = {}
        for path in _walk(root):
            names.setdefault(path.name, path)
            m = _COCO_ID.search(path.name)
            if m:
                ids.setdefault(int(m.group(1)), path)
        return names, ids

    for im in annotations.images:
        path: Path | None = None
        if im.file_name:
            for candidate in (root / im.file_name, root / Path(im.file_name).name):
                if candidate.is_file():
                    path = candidate
                    break
        if path is None:
            if by_name is None or by_coco_id is None:
                by_name, by_coco_id = index()
            if im.file_name:
                path = by_name.get(Path(im.file_name).name)
            elif isinstance(im.image_id, int) or str(im.image_id).isdigit():
                path = by_coco_id.get(int(im.image_id))
        if path is None:
            missing.append(im)
        else:
            found[im.image_id] = path
    return found, missing


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            yield Path(dirpath) / name


# --- predictions ------------------------------------------------------------------------------


@dataclass
class Predictions:
    """Captions read from a file: COCO results (by image id) or blipcap JSON Lines (by path)."""

    format: str
    """coco-results or jsonl."""
    source: str
    by_id: dict[ImageId, str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)


def read_predictions(path: str | Path) -> Predictions:
    """Read ``[{"image_id", "caption"}]`` (COCO results) or ``blipcap caption --format jsonl`` output."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvaluationError(f"predictions file {source!r} does not exist") from None
    if text.lstrip().startswith("["):
        data = _load_json(path, "predictions file")
        by_id: dict[ImageId, str] = {}
        for i, item in enumerate(data):
            if not isinstance(item, dict) or "image_id" not in item or "caption" not in item:
                raise EvaluationError(
                    f"predictions file {source!r}: item {i} needs 'image_id' and 'caption' "
                    "(COCO results format)"
                )
            if item["image_id"] in by_id:
                raise EvaluationError(
                    f"predictions file {source!r}: image id {item['image_id']!r} has two captions; "
                    "COCO results hold one caption per image"
                )
            by_id[item["image_id"]] = str(item["caption"])
        return Predictions("coco-results", source, by_id=by_id)
    return Predictions("jsonl", source, records=read_jsonl(path, "predictions file"))


def read_jsonl(path: str | Path, what: str) -> list[dict[str, Any]]:
    """Records of ``blipcap caption --format jsonl`` (each needs ``path`` and ``caption``)."""
    records: list[dict[str, Any]] = []
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise EvaluationError(f"{what} {str(path)!r} does not exist") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvaluationError(
                    f"{what} {str(path)!r} line {n} is not JSON ({exc.msg}); expected the JSON "
                    "Lines that `blipcap caption --format jsonl` writes, or a COCO results list"
                ) from None
            if not isinstance(record, dict) or "path" not in record or "caption" not in record:
                raise EvaluationError(
                    f"{what} {str(path)!r} line {n} has no 'path' and 'caption'; expected the "
                    "records of `blipcap caption --format jsonl`"
                )
            records.append(record)
    if not records:
        raise EvaluationError(f"{what} {str(path)!r} holds no records")
    return records


def match_predictions(
    annotations: Annotations, predictions: Predictions, images_dir: str | Path | None = None
) -> tuple[dict[ImageId, str], list[ImageRef]]:
    """Captions by annotation image id, and the annotation images that have none.

    COCO results match by image id (``1`` and ``"1"`` are the same image);
    JSON Lines records match by path below ``images_dir``, else by file name.
    """
    captions: dict[ImageId, str] = {}
    if predictions.format == "coco-results":
        by_key = {str(k): v for k, v in predictions.by_id.items()}
        for im in annotations.images:
            caption = by_key.get(str(im.image_id))
            if caption is not None:
                captions[im.image_id] = caption
    else:
        by_path: dict[str, str] = {}
        by_name: dict[str, str | None] = {}
        for r in predictions.records:
            if r.get("caption") is None:
                continue  # an item error in that run: no caption to score
            p = str(r["path"])
            by_path[os.path.normpath(p)] = r["caption"]
            name = Path(p).name
            by_name[name] = None if name in by_name else r["caption"]  # ambiguous -> None
        for im in annotations.images:
            if not im.file_name:
                continue
            keys = [os.path.normpath(im.file_name)]
            if images_dir is not None:
                keys.insert(0, os.path.normpath(str(Path(images_dir) / im.file_name)))
            caption = next((by_path[k] for k in keys if k in by_path), None)
            if caption is None:
                caption = by_name.get(Path(im.file_name).name)
            if caption is not None:
                captions[im.image_id] = caption
    missing = [im for im in annotations.images if im.image_id not in captions]
    return captions, missing


def write_results(path: str | Path, items: Iterable[tuple[ImageId, str]]) -> None:
    """Write COCO results (``[{"image_id": ..., "caption": ...}]``) atomically."""
    data = [{"image_id": image_id, "caption": caption} for image_id, caption in items]
    write_json_atomic(path, data)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON next to its destination, then rename: a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
