"""The user's unlabeled images: listing, the held-back split, and the teacher's captions.

The teacher's captions (token ids) are computed once and kept in
``<out>/distill-state/teacher.jsonl``, one line per image, so an interrupted
run does not caption its images again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, OptionsError
from ..images import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class Example:
    path: str
    """Relative to the image folder (the key in teacher.jsonl)."""
    tokens: tuple[int, ...]
    """The teacher's caption: generated token ids, without [DEC] and [SEP]."""
    finished: bool
    """The teacher ended the caption with [SEP] (False: it hit the length limit)."""


def list_images(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursively, by extension), relative paths, sorted."""
    if not folder.is_dir():
        raise OptionsError(f"{folder} is not a directory; pass a folder of images to distill on")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(os.path.relpath(os.path.join(root, name), folder))
    if len(found) < 2:
        raise OptionsError(
            f"{folder} holds {len(found)} image(s); distilling needs at least 2 (one to train "
            "on, one held back), and thousands to be useful"
        )
    return sorted(found)


def split(paths: list[str], val_images: int) -> tuple[list[str], list[str]]:
    """(train, held-back): the held-back images are chosen by a hash of their path.

    The choice does not depend on the order of listing or on the other files, so
    adding images to the folder keeps the old held-back ones held back.
    """
    if not 1 <= val_images < len(paths):
        raise OptionsError(
            f"--val-images {val_images}: it must be between 1 and {len(paths) - 1} for "
            f"{len(paths)} images"
        )
    ranked = sorted(paths, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    held = set(ranked[:val_images])
    return [p for p in paths if p not in held], [p for p in paths if p in held]


def default_val_images(n: int) -> int:
    """5% of the images, at least 1 and at most 1000."""
    return max(1, min(1000, n // 20))


class TeacherLabels:
    """The teacher's captions of every image, computed once and kept on disk."""

    def __init__(self, path: Path, settings: dict):
        self.path = path
        self.settings = settings
        self.examples: dict[str, Example] = {}
        self.failed: dict[str, str] = {}
        if path.exists():
            self._read()

    def _read(self) -> None:
        with self.path.open(encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
        if not lines or lines[0].get("settings") != self.settings:
            # Captions made with other decoding settings (or another teacher) do not count.
            self.path.unlink()
            return
        for rec in lines[1:]:
            if rec.get("error"):
                self.failed[rec["path"]] = rec["error"]
            else:
                self.examples[rec["path"]] = Example(
                    rec["path"], tuple(rec["tokens"]), rec["finished"]
                )

    def missing(self, paths: list[str]) -> list[str]:
        return [p for p in paths if p not in self.examples and p not in self.failed]

    def compute(
        self,
        paths: list[str],
        caption_batch: Callable[[list[str]], list[tuple[list[int], bool] | str]],
        batch_size: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """Caption the images not yet labelled; ``caption_batch`` returns (tokens, finished) or an error."""
        todo = self.missing(paths)
        if not todo:
            return
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            if new:
                f.write(json.dumps({"settings": self.settings}) + "\n")
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                for path, out in zip(chunk, caption_batch(chunk), strict=True):
                    if isinstance(out, str):
                        self.failed[path] = out
                        f.write(json.dumps({"path": path, "error": out}) + "\n")
                    else:
                        tokens, finished = out
                        self.examples[path] = Example(path, tuple(tokens), finished)
                        rec = {"path": path, "tokens": list(tokens), "finished": finished}
                        f.write(json.dumps(rec) + "\n")
                f.flush()
                if on_batch is not None:
                    on_batch(len(chunk))


def load_pixels(
    folder: Path, paths: list[str], load: Callable[[str], np.ndarray], workers: int = 4
) -> list[np.ndarray | str]:
    """Preprocessed pixels per path, or the error message for an image that cannot be used."""

    def one(p: str) -> np.ndarray | str:
        try:
            return load(str(folder / p))
        except (InputError, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"

    if len(paths) == 1:
        return [one(paths[0])]
    with ThreadPoolExecutor(max_workers=min(workers, len(paths))) as pool:
        return list(pool.map(one, paths))


def batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sequences(examples: list[Example], bos: int, sep: int, pad: int, device):
    """Teacher forcing: inputs [DEC] + tokens, targets tokens + [SEP] (when the teacher ended there)."""
    import torch

    seqs = [[bos, *e.tokens] + ([sep] if e.finished else []) for e in examples]
    width = max(len(s) for s in seqs) - 1
    inputs = torch.full((len(seqs), width), pad, dtype=torch.long)
    targets = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        n = len(s) - 1
        inputs[i, :n] = torch.tensor(s[:-1])
        targets[i, :n] = torch.tensor(s[1:])
        mask[i, :n] = True
    return inputs.to(device), targets.to(device), mask.to(device)
