"""Caption an evaluation set through the Captioner contract and score it the way the papers do.

The ``coco`` preset is the BLIP paper's protocol (beam 3, length 5..20 counted
with the prompt "a picture of ", prompt stripped). NoCaps is scored overall and
per domain (in-, near-, out-domain), each subset on its own as the NoCaps
evaluation does, so that CIDEr's document frequencies come from that subset.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..options import CaptionOptions
from ..results import CaptionModel
from .formats import Annotations, ImageId
from .metrics import MetricsResult, Scorer


@dataclass
class CaptionedSet:
    captions: dict[ImageId, str] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    """{"image_id", "path", "error": {"type", "message"}} for images with no caption."""
    seconds: float = 0.0


def caption_set(
    captioner: CaptionModel,
    annotations: Annotations,
    paths: Mapping[ImageId, Path],
    options: CaptionOptions,
    batch_size: int | str = "auto",
    progress: bool = False,
) -> CaptionedSet:
    """Caption every located image of ``annotations`` (in file order); bad images become failures."""
    ids = [im.image_id for im in annotations.images if im.image_id in paths]
    out = CaptionedSet()
    t0 = time.perf_counter()
    results = captioner.caption_iter(
        [str(paths[i]) for i in ids], options=options, batch_size=batch_size, progress=progress
    )
    for image_id, result in zip(ids, results, strict=True):
        if result.error is not None or result.caption is None:
            error = result.error
            out.failures.append(
                {
                    "image_id": image_id,
                    "path": str(paths[image_id]),
                    "error": {"type": error.type, "message": error.message} if error else None,
                }
            )
        else:
            out.captions[image_id] = result.caption
    out.seconds = time.perf_counter() - t0
    return out


@dataclass
class SetScores:
    overall: MetricsResult
    by_domain: dict[str, MetricsResult] = field(default_factory=dict)


def score_set(
    annotations: Annotations, captions: Mapping[ImageId, str], spice: bool | None = None
) -> SetScores:
    """Score the images that have a caption: overall, and per NoCaps domain when the set has them."""
    scored = [im for im in annotations.images if im.image_id in captions]
    refs = {im.image_id: annotations.references[im.image_id] for im in scored}
    cands = {im.image_id: captions[im.image_id] for im in scored}
    with Scorer(spice=spice) as scorer:
        result = SetScores(scorer.score(refs, cands))
        for domain in annotations.domains:
            ids = [im.image_id for im in scored if im.domain == domain]
            if ids:
                result.by_domain[domain] = scorer.score(
                    {i: refs[i] for i in ids}, {i: cands[i] for i in ids}
                )
    return result
