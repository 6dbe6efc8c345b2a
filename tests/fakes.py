"""Fakes that stand in for the model and the embedder, used like the real ones.

:class:`FakeCaptioner` has the interface of :class:`blipcap.Captioner` that commands,
the indexer, the evaluation and the social descriptions use (``caption``,
``caption_iter``, ``provenance_for``, ``random_weights``), and gives records of
the same shape. :func:`register` puts one where the real one is found
(``blipcap.captioner.get_captioner``), so a command run in-process loads it
exactly as it would load a model - flags, warnings and exit codes included.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from blipcap.options import CaptionOptions, resolve_options
from blipcap.results import Caption, ItemError, Provenance
from blipcap.version import __version__


class FakeItemError(Exception):
    """Raised by a ``describe`` function: the input gets an item error of this type."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(message)
        self.type = type
        self.message = message


def mean_colour(image: Any) -> str:
    """Describe a PIL image by its mean colour; red 13 is a colour the model "fails" on."""
    r, g, b = (int(v) for v in np.asarray(image).reshape(-1, 3).mean(0))
    if r == 13:
        raise FakeItemError("BackendError", "model failed")
    return f"a photo of colour {r} {g} {b}"


class FakeCaptioner:
    """A captioner without a model: ``describe(input) -> caption`` (raise FakeItemError to
    fail that input). Records every call: ``calls`` (inputs, options), ``batches`` (sizes),
    ``invocations`` (inputs captioned)."""

    def __init__(
        self,
        describe: Callable[[Any], str] = mean_colour,
        *,
        model: str = "fake/model",
        revision: str | None = None,
        random_weights: bool = False,
    ) -> None:
        self.describe = describe
        self.model = model
        self.revision = revision
        self.random_weights = random_weights
        self.calls: list[tuple[list[Any], CaptionOptions]] = []
        self.batches: list[int] = []
        self.invocations = 0

    def provenance_for(self, options: CaptionOptions) -> Provenance:
        return Provenance(
            self.model,
            self.revision,
            "torch",
            "float32",
            "cpu",
            options.to_dict(),
            __version__,
            random_weights=self.random_weights,
        )

    def caption_iter(
        self,
        images: Iterable[Any],
        preset: str | None = None,
        options: CaptionOptions | None = None,
        batch_size: int | str = "auto",
        progress: bool = False,
        **overrides: Any,
    ) -> Iterator[Caption]:
        opts = resolve_options(options, preset, **overrides)
        images = list(images)
        self.calls.append((images, opts))
        self.batches.append(len(images))
        self.invocations += len(images)
        provenance = self.provenance_for(opts)
        for image in images:
            path = os.fspath(image) if isinstance(image, (str, Path)) else None
            try:
                text = self.describe(image)
            except FakeItemError as exc:
                error = ItemError(exc.type, exc.message)
                yield Caption(path, None, error=error, provenance=provenance)
                continue
            yield Caption(path, text, [text], provenance=provenance)

    def caption(self, images: Iterable[Any], *args: Any, **kwargs: Any) -> list[Caption]:
        return list(self.caption_iter(images, *args, **kwargs))


def register(monkeypatch: Any, captioner: Any) -> list[tuple[Any, ...]]:
    """Make ``captioner`` the process's captioner for any settings, as ``get_captioner``
    returns a loaded model. Returns the list of the settings it was asked for."""
    asked: list[tuple[Any, ...]] = []

    def get_captioner(*args: Any, **kwargs: Any) -> Any:
        asked.append(args + tuple(kwargs.values()))
        return captioner

    monkeypatch.setattr("blipcap.captioner.get_captioner", get_captioner)
    return asked


class WordEmbedder:
    """A fake embedder: one dimension per known word, so similarity is word overlap."""

    name = "fake-words"
    VOCAB = ["dog", "beach", "cat", "sofa", "invoice", "receipt", "cake", "birthday"]

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.VOCAB)), dtype=np.float32)
        for i, text in enumerate(texts):
            for j, word in enumerate(self.VOCAB):
                out[i, j] = text.lower().count(word)
            norm = np.linalg.norm(out[i])
            if norm:
                out[i] /= norm
        return out

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


class LengthEmbedder:
    """A fake embedder that needs no vocabulary: a 2-d unit vector from the text's length."""

    name = "fake"

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.array(
            [[len(t) % 7 + 1.0, 1.0] / np.hypot(len(t) % 7 + 1.0, 1.0) for t in texts],
            dtype=np.float32,
        )

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


class CaptionTable(dict):
    """``describe`` for file inputs: the caption of each file name; a name not in the
    table is an unreadable image (edit the table between runs to make captions drift)."""

    def __call__(self, image: Any) -> str:
        name = Path(os.fspath(image)).name
        if name not in self:
            raise FakeItemError("CorruptImageError", f"{image}: cannot decode")
        return self[name]
