"""Self-verification: score candidate captions against their image and keep the best.

BLIP's image-text matching model (``Salesforce/blip-itm-large-coco``, run by
:mod:`blipcap.model.itm`) gives each (image, caption) pair the probability
that the caption matches the image. :class:`ItmScorer` computes it;
:func:`rerank` orders each result's candidates by it; :func:`caption_and_rerank`
is the whole pipeline (decode once, caption K candidates, score, keep the best)
behind ``blipcap caption --rerank itm``.

The reranked record keeps every field of the plain one. ``caption`` is the
best-scoring candidate, ``captions`` (when K > 1) the candidates best first,
``itm_score`` the kept caption's probability, ``itm_scores`` (when K > 1) every
candidate's, and ``rerank`` says which model scored them.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ._optional import require
from .engine import decode_ahead
from .errors import InputError, ModelLoadError, OptionsError
from .hub import ModelFiles, ModelRole, resolve_model
from .images import DEFAULT_LIMITS, ImageLimits, load_image
from .inputs import ImageInput, source_label
from .options import CaptionOptions, resolve_options
from .results import Caption

DEFAULT_ITM_MODEL = "Salesforce/blip-itm-large-coco"
RERANK_METHODS = ("itm",)
DEFAULT_CANDIDATES = 3
"""Captions generated per image when reranking and neither --num-captions nor --beams says."""

ITM_ROLE = ModelRole(
    architecture="BlipForImageTextRetrieval",
    purpose="image-text matching",
    option="--rerank itm --rerank-model",
    env="BLIPCAP_RERANK_MODEL",
    models=(DEFAULT_ITM_MODEL, "Salesforce/blip-itm-base-coco"),
)


@dataclass(frozen=True)
class Reranker:
    """Which model scored the candidates (the ``rerank`` field of a reranked record)."""

    method: str
    model: str
    revision: str | None
    random_weights: bool = False

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        if not self.random_weights:
            del record["random_weights"]
        return record


@dataclass(frozen=True)
class RankedCaption(Caption):
    """A :class:`~blipcap.results.Caption` whose candidates were scored against the image.

    ``captions`` are ordered best first and ``caption`` is ``captions[0]``;
    ``itm_scores`` are their match probabilities, in the same order.
    """

    itm_scores: list[float] = field(default_factory=list)
    reranker: Reranker | None = None

    @property
    def itm_score(self) -> float | None:
        """The kept caption's probability of matching the image (0..1)."""
        return self.itm_scores[0] if self.itm_scores else None

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for key, value in super().to_record().items():
            if key == "error":  # the scores go right after the caption(s)
                record["itm_score"] = self.itm_score
                if len(self.itm_scores) > 1:
                    record["itm_scores"] = list(self.itm_scores)
            record[key] = value
        if self.reranker is not None:
            record["rerank"] = self.reranker.to_record()
        return record


class ItmScorer:
    """A loaded image-text matching model: ``score(image, captions) -> [P(match), ...]``.

    ``model``: hub id or local directory of a BlipForImageTextRetrieval
    checkpoint (default ``$BLIPCAP_RERANK_MODEL`` or
    ``Salesforce/blip-itm-large-coco``). ``device`` and ``dtype`` as for
    :class:`~blipcap.Captioner`. ``batch_size``: images per forward pass in
    :meth:`score_batch`. Needs PyTorch (the ONNX captioner can rerank, but the
    scorer runs on torch).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        *,
        revision: str | None = None,
        batch_size: int = 8,
        limits: ImageLimits = DEFAULT_LIMITS,
    ):
        if batch_size < 1:
            raise OptionsError(f"batch_size must be >= 1, got {batch_size}")
        self.torch = require("torch", "torch", "reranking with the image-text matching model")
        from .backends.torch import resolve_device, resolve_dtype
        from .model.itm import ItmConfig, ItmTokenizer, load_itm_model
        from .model.processing import ImagePreprocessor

        self.files: ModelFiles = resolve_model(model, revision=revision, role=ITM_ROLE)
        if self.files.kind != "hf":
            raise ModelLoadError(
                f"{self.files.path} is an exported ONNX directory; reranking needs the Hugging "
                f"Face checkpoint of an image-text matching model, e.g. {DEFAULT_ITM_MODEL}"
            )
        self.config = ItmConfig.from_dict(self.files.config or {}, self.files.path / "config.json")
        self.device = resolve_device(device)
        self.dtype_name = resolve_dtype(dtype, self.device)
        self.model = load_itm_model(
            self.files.path, self.config, getattr(self.torch, self.dtype_name), self.device
        )
        t = self.config.text
        self.tokenizer = ItmTokenizer(self.files.path, t.max_position_embeddings, t.pad_token_id)
        self.preprocess = ImagePreprocessor.from_dir(self.files.path, self.config.vision.image_size)
        self.batch_size = batch_size
        self.limits = limits

    @property
    def random_weights(self) -> bool:
        return self.config.random_weights

    @property
    def reranker(self) -> Reranker:
        return Reranker("itm", self.files.model_id, self.files.revision, self.random_weights)

    def pixels(self, image: Any) -> np.ndarray:
        """Model pixels of ``image``: a PIL image, a path or bytes (decoded safely), or pixels already."""
        if isinstance(image, np.ndarray):
            return image
        if not isinstance(image, Image.Image):
            image = load_image(image, self.limits)
        return self.preprocess(image)

    def score(self, image: Any, captions: list[str]) -> list[float]:
        """The probability that each caption matches ``image`` (softmax of the ITM head, class 1)."""
        return self.score_batch([image], [captions])[0]

    def score_batch(self, images: list[Any], captions: list[list[str]]) -> list[list[float]]:
        """:meth:`score` for several images, ``batch_size`` images per forward pass."""
        return self._run(images, captions, itm=True)

    def similarity(self, image: Any, captions: list[str]) -> list[float]:
        """Cosine similarity of each caption to ``image`` in the contrastive (ITC) space, -1..1."""
        return self._run([image], [captions], itm=False)[0]

    def _run(self, images: list[Any], captions: list[list[str]], itm: bool) -> list[list[float]]:
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} image(s) but {len(captions)} caption list(s)")
        out: list[list[float]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            out += self._chunk(images[chunk], captions[chunk], itm)
        return out

    def _chunk(self, images: list[Any], captions: list[list[str]], itm: bool) -> list[list[float]]:
        torch = self.torch
        keep = [i for i, c in enumerate(captions) if c]
        result: list[list[float]] = [[] for _ in captions]
        if not keep:
            return result
        pixels = np.stack([self.pixels(images[i]) for i in keep])
        with torch.no_grad():
            px = torch.from_numpy(pixels).to(self.device, getattr(torch, self.dtype_name))
            embeds = self.model.vision_model(px)
            counts = {len(captions[i]) for i in keep}
            # Captions of one image share its cross-attention keys/values; with the same
            # count per image the whole chunk runs as one pass, else image by image.
            groups = [keep] if len(counts) == 1 else [[i] for i in keep]
            for group in groups:
                rows = len(captions[group[0]])
                texts = [t for i in group for t in captions[i]]
                ids, mask = self.tokenizer.batch(texts)
                ids, mask = ids.to(self.device), mask.to(self.device)
                where = [keep.index(i) for i in group]
                emb = embeds[where]
                if itm:
                    values = self.model.itm_logits(emb, ids, mask, rows).float().softmax(-1)[:, 1]
                else:
                    values = self.model.itc_similarity(emb, ids, mask, rows).float()
                flat = values.cpu().tolist()
                for n, i in enumerate(group):
                    result[i] = flat[n * rows : (n + 1) * rows]
        return result


# -- reranking -------------------------------------------------------------------------------


def rerank(
    results: Iterable[Caption], images: Iterable[Any], scorer: ItmScorer
) -> Iterator[Caption]:
    """Score each result's candidates against its image; yield them best first, in input order.

    ``images`` pairs one-to-one with ``results`` (PIL images, paths, bytes or
    the scorer's pixels); a failed result passes through unchanged and its
    image is not looked at. Lazy: ``scorer.batch_size`` images are scored at a time.
    """
    return _rerank_pairs(zip(results, images, strict=True), scorer)


def _rerank_pairs(pairs: Iterable[tuple[Caption, Any]], scorer: ItmScorer) -> Iterator[Caption]:
    pending: list[tuple[Caption, Any]] = []
    for result, image in pairs:
        pending.append((result, image))
        if sum(r.ok for r, _ in pending) >= scorer.batch_size:
            yield from _rerank_some(pending, scorer)
            pending = []
    yield from _rerank_some(pending, scorer)


def _rerank_some(pending: list[tuple[Caption, Any]], scorer: ItmScorer) -> Iterator[Caption]:
    good = [(r, im) for r, im in pending if r.ok]
    scores = iter(scorer.score_batch([im for _, im in good], [_candidates(r) for r, _ in good]))
    for result, _ in pending:
        yield ranked(result, next(scores), scorer.reranker) if result.ok else result


def _candidates(result: Caption) -> list[str]:
    return list(result.captions) or ([result.caption] if result.caption is not None else [])


def ranked(result: Caption, scores: list[float], reranker: Reranker | None) -> RankedCaption:
    """``result`` with its candidates ordered by ``scores`` (best first; ties keep their order)."""
    candidates = _candidates(result)
    order = sorted(range(len(candidates)), key=lambda i: -scores[i])
    captions = [candidates[i] for i in order]
    confidences = list(result.confidences)
    if len(confidences) == len(candidates):  # each candidate keeps its own confidence
        confidences = [confidences[i] for i in order]
    return RankedCaption(
        path=result.path,
        caption=captions[0] if captions else result.caption,
        captions=captions if result.captions else [],
        error=result.error,
        provenance=result.provenance,
        confidences=confidences,
        guard=result.guard,
        itm_scores=[scores[i] for i in order],
        reranker=reranker,
    )


def rerank_options(
    options: CaptionOptions | None = None, preset: str | None = None, **overrides: Any
) -> CaptionOptions:
    """Caption options for reranking: K candidates per image unless one caption was asked for.

    K is ``num_captions`` when given, else the beam width when beam search was
    asked for (``--beams N`` or a beam preset), else :data:`DEFAULT_CANDIDATES`.
    Greedy decoding gives one caption, so without ``--beams`` or ``--sample``
    the beam width is raised to K (beam search returns the K best beams).
    """
    opts = resolve_options(
        options, preset, **{k: v for k, v in overrides.items() if k != "num_captions"}
    )
    k = overrides.get("num_captions")
    if k is None:
        k = opts.num_beams if opts.num_beams > 1 else DEFAULT_CANDIDATES
    beams_given = overrides.get("num_beams") is not None
    if not opts.do_sample and opts.num_beams < k and not beams_given:
        return opts.replace(num_beams=k, num_captions=k)
    return opts.replace(num_captions=k)


def caption_and_rerank(
    captioner,
    scorer: ItmScorer,
    images: Iterable[Any],
    *,
    options: CaptionOptions,
    batch_size: int | str = "auto",
    progress: bool = False,
) -> Iterator[Caption]:
    """Caption ``images`` with ``options`` (see :func:`rerank_options`) and rerank each result.

    Every input is decoded once: the captioner gets it at its own input size
    (which preprocesses to the same pixels) and the scorer its own pixels, so
    a URL is fetched once and standard input read once, and no full-size image
    waits in memory for the model.
    """
    workers = getattr(captioner, "decode_workers", 2)
    waiting: deque[np.ndarray | None] = deque()

    def prepare(item: Any) -> tuple[ImageInput, np.ndarray | None]:
        label = source_label(item)
        try:
            image = captioner.load_rgb(item)
            small = captioner.preprocess.to_model_size(image)
            return ImageInput(label, "image", small), scorer.pixels(image)
        except (InputError, OSError, ValueError) as exc:  # what the captioner reports per item
            return ImageInput(label, "error", exc), None

    def inputs() -> Iterator[ImageInput]:
        for item, pixels in decode_ahead(
            prepare, images, workers=workers, window=2 * workers, name="blipcap-rerank-decode"
        ):
            waiting.append(pixels)
            yield item

    feed: Iterable[ImageInput] = inputs()
    if hasattr(images, "__len__"):
        feed = _Sized(feed, len(images))  # type: ignore[arg-type]
    results = captioner.caption_iter(
        feed, options=options, batch_size=batch_size, progress=progress
    )
    yield from _rerank_pairs(((r, waiting.popleft()) for r in results), scorer)


class _Sized:
    """An iterator that knows its length: the captioner's progress bar shows the total."""

    def __init__(self, iterator: Iterator[Any], length: int):
        self._iterator, self._length = iterator, length

    def __iter__(self) -> Iterator[Any]:
        return self._iterator

    def __len__(self) -> int:
        return self._length
