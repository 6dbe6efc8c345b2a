"""The lean engine against transformers, in one run: BLIP-large shape, random weights.

For each batch size, transformers' fp32 ``BlipForConditionalGeneration.generate``
(the baseline) and blipcap's torch backend in fp32 caption the same synthetic
640x480 images end to end (preprocessing included), greedy with a forced
generated length. Each configuration runs in a fresh process so its peak RSS
is its own. Speed does not depend on weight values once the length is forced.

    python benchmarks/core.py                    # batch 1 and 8, 20 tokens
    python benchmarks/core.py --batches 1 --repeats 1 --shape base
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, peak_rss_mib, random_checkpoint, run_worker, synthetic_images  # noqa: E402


def worker(impl: str, checkpoint: str, batch: int, tokens: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(torch.get_num_threads())
    images = synthetic_images(batch)
    t0 = time.perf_counter()
    if impl == "transformers":
        from transformers import BlipForConditionalGeneration, BlipProcessor

        model = BlipForConditionalGeneration.from_pretrained(checkpoint).eval()
        processor = BlipProcessor.from_pretrained(checkpoint)

        def run():
            with torch.no_grad():
                inputs = processor(images=images, return_tensors="pt")
                out = model.generate(**inputs, min_new_tokens=tokens, max_new_tokens=tokens)
            assert out.shape[1] == tokens + 1
    else:
        from blipcap import Captioner

        cap = Captioner(checkpoint, backend="torch", device="cpu", dtype="float32")

        def run():
            results = cap.caption(
                images, batch_size=batch, min_new_tokens=tokens, max_new_tokens=tokens,
                guard=False,  # the same decoding as transformers' generate
            )  # fmt: skip
            assert all(r.ok for r in results)

    run()  # warm-up, also the cold start to the first caption
    cold = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    best = min(times)
    return {
        "impl": impl, "batch": batch, "tokens": tokens,
        "images_per_second": batch / best, "seconds_per_batch": best,
        "cold_start_seconds": cold, "peak_rss_mib": peak_rss_mib(),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shape", default="large", choices=["tiny", "small", "base", "large"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results (default benchmarks/results/core-<host>.json)",
    )
    ap.add_argument(
        "--worker",
        nargs=5,
        metavar=("IMPL", "CKPT", "BATCH", "TOKENS", "REPEATS"),
        help=argparse.SUPPRESS,
    )
    args = ap.parse_args()
    if args.worker:
        impl, ckpt, batch, tokens, repeats = args.worker
        print(json.dumps(worker(impl, ckpt, int(batch), int(tokens), int(repeats))))
        return

    ckpt = random_checkpoint(args.shape)
    rows = []
    for batch in args.batches:
        for impl in ("transformers", "blipcap-torch"):
            r = run_worker(
                Path(__file__), [impl, str(ckpt), str(batch), str(args.tokens), str(args.repeats)]
            )
            rows.append(r)
            print(
                f"{impl:14s} batch {batch:3d}: {r['images_per_second']:.3f} img/s, "
                f"peak RSS {r['peak_rss_mib']:.0f} MiB, cold start {r['cold_start_seconds']:.1f} s",
                file=sys.stderr,
            )
    table = [
        "| batch | implementation | images/s | ratio | peak RSS (MiB) | RSS ratio |",
        "|---|---|---|---|---|---|",
    ]
    for batch in args.batches:
        base = next(r for r in rows if r["batch"] == batch and r["impl"] == "transformers")
        for r in (x for x in rows if x["batch"] == batch):
            r["speed_ratio"] = r["images_per_second"] / base["images_per_second"]
            r["rss_ratio"] = r["peak_rss_mib"] / base["peak_rss_mib"]
            table.append(
                f"| {batch} | {r['impl']} | {r['images_per_second']:.3f} | {r['speed_ratio']:.2f}x "
                f"| {r['peak_rss_mib']:.0f} | {r['rss_ratio']:.2f} |"
            )
    result = {
        "benchmark": "core",
        "shape": args.shape,
        "tokens": args.tokens,
        "machine": machine(),
        "results": rows,
    }
    out = args.out or Path(__file__).parent / "results" / f"core-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(table))
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
