"""What ``--rerank itm`` costs: captioning K candidates and scoring them, on the full BLIP-large shapes.

Random-weight checkpoints of the real shapes (captioner: BLIP-large; scorer:
blip-itm-large-coco, ViT-L/16 at 384 px + BERT-base), so the numbers are the
compute of the published models. Per image, one image at a time, fp32 by
default:

* ``greedy``: the default preset (what ``blipcap caption`` runs without --rerank);
* ``beam3``: 3 beams, 3 candidates (what ``--rerank itm`` captions with by default);
* ``itm``: scoring 3 candidates with the lean ITM model;
* ``itm_transformers``: the same pairs through transformers' BlipForImageTextRetrieval
  (the baseline, same run);
* ``pipeline``: ``caption_and_rerank`` end to end (decode, beam 3, score).

Captions are forced to ``--tokens`` new tokens (random weights rarely stop on
their own). Run: ``python benchmarks/rerank.py --images 3 --out benchmarks/results/rerank-vm``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CACHE, machine, random_checkpoint, synthetic_images  # noqa: E402


def itm_checkpoint(shape: str = "large", seed: int = 3) -> Path:
    from blipcap.testing import make_random_itm_checkpoint

    path = CACHE / f"itm-{shape}-s{seed}-st"
    if not (path / "config.json").exists():
        tmp = CACHE / f".{path.name}.tmp{os.getpid()}"
        make_random_itm_checkpoint(tmp, shape, seed=seed)
        tmp.rename(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--shape", default="large")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = ap.parse_args()

    import numpy as np
    import torch
    import transformers

    from blipcap import Captioner
    from blipcap.rerank import ItmScorer, caption_and_rerank, rerank_options

    cap_dir, itm_dir = random_checkpoint(args.shape), itm_checkpoint(args.shape)
    cap = Captioner(str(cap_dir), backend="torch", device="cpu", dtype=args.dtype)
    scorer = ItmScorer(str(itm_dir), device="cpu", dtype=args.dtype, batch_size=1)
    ref = transformers.BlipForImageTextRetrieval.from_pretrained(itm_dir).eval()
    proc = transformers.BlipProcessor.from_pretrained(itm_dir)
    images = synthetic_images(args.images)
    forced = dict(max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    greedy = rerank_options(num_captions=1, **forced)
    beam3 = rerank_options(**forced)
    candidates = [r.captions for r in cap.caption(images, options=beam3, batch_size=1)]

    def ref_scores(image, texts):
        inputs = proc(images=[image] * len(texts), text=texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            return ref(**inputs, use_itm_head=True).itm_score.softmax(-1)[:, 1]

    cap.caption(images[:1], options=greedy, batch_size=1)  # warm-up
    steps = {
        "greedy": lambda im, _: cap.caption([im], options=greedy, batch_size=1),
        "beam3": lambda im, _: cap.caption([im], options=beam3, batch_size=1),
        "itm": lambda im, texts: scorer.score(im, texts),
        "itm_transformers": ref_scores,
        "pipeline": lambda im, _: list(
            caption_and_rerank(cap, scorer, [im], options=beam3, batch_size=1)
        ),
    }
    per_image: dict[str, list[float]] = {name: [] for name in steps}
    for image, texts in zip(images, candidates, strict=True):
        for name, step in steps.items():
            start = time.perf_counter()
            step(image, texts)
            per_image[name].append(time.perf_counter() - start)
    diff = max(
        float(np.abs(np.array(scorer.score(im, t)) - ref_scores(im, t).numpy()).max())
        for im, t in zip(images, candidates, strict=True)
    )
    result = {
        "machine": machine(),
        "load_average": os.getloadavg(),
        "shape": args.shape,
        "dtype": args.dtype,
        "images": args.images,
        "new_tokens": args.tokens,
        "median_s_per_image": {k: statistics.median(v) for k, v in per_image.items()},
        "max_abs_score_difference_vs_transformers": diff,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
        med = result["median_s_per_image"]
        lines = [
            f"# --rerank itm cost ({args.shape} shapes, {args.dtype}, CPU)",
            "",
            f"{args.images} images, one at a time, {args.tokens} new tokens forced; "
            f"load average at the end {tuple(round(x, 1) for x in result['load_average'])} "
            f"on {result['machine']['cpus']} CPUs (shared machine).",
            "",
            "| step | median s/image |",
            "|---|---|",
            *(f"| {k} | {v:.2f} |" for k, v in med.items()),
            "",
            f"Scores vs transformers: max |difference| {diff:.1e}.",
        ]
        Path(args.out + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
