"""GPU throughput, end to end from JPEG bytes to captions, against transformers in the same run.

BLIP-large shape with random weights (speed does not depend on weight values
once the generated length is forced). Inputs: synthetic 640x480 JPEGs (smooth
photo-like content plus noise, ~60-90 KB each). Measured, each after a
warm-up pass (graph capture, kernel autotuning):

* blipcap greedy, 20 new tokens forced: the overlapped pipeline
  (``caption_stream``; CPU decode workers, pinned staging, encoder of batch
  N+1 on a side stream), the same without overlap, and the plain
  ``Captioner.caption`` path (per-batch, fast decode steps);
* blipcap beam 3 in the ``coco`` preset's shape (prompt "a picture of ",
  total length 20, forced);
* the decode-step variants: CUDA graphs, ``torch.compile(mode="reduce-overhead")``
  and eager static steps;
* baselines: transformers' ``image-text-to-text`` pipeline, fp16,
  ``batch_size=32``, and ``BlipForConditionalGeneration.generate``, fp16,
  batch 256, each with its own ``BlipProcessor`` preprocessing;
* peak GPU memory, and the cosine similarity of bf16 / fp16 next-token logits
  to fp32 along the fp32 greedy path (the accuracy proxy without real weights).

    python benchmarks/gpu.py            # on a CUDA GPU: writes benchmarks/results/gpu-<device>.json
    python benchmarks/gpu.py --smoke    # tiny checkpoint, 12 images, any machine; prints, writes nothing
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, random_checkpoint  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def synthetic_jpegs(n: int, width: int = 640, height: int = 480, seed: int = 0) -> list[bytes]:
    """Photo-like JPEGs: a smooth random field upsampled, plus sensor-like noise."""
    from PIL import Image

    def one(i: int) -> bytes:
        rng = np.random.default_rng(seed + i)
        small = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
        base = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, "JPEG", quality=90)
        return buf.getvalue()

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


class Gpu:
    """CUDA timing and memory helpers that do nothing on a CPU (smoke mode)."""

    def __init__(self, torch, device: str):
        self.torch, self.cuda = torch, device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def release(self) -> None:
        import gc

        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def peak_gib(self) -> float | None:
        return round(self.torch.cuda.max_memory_allocated() / 2**30, 2) if self.cuda else None


def timed(gpu: Gpu, fn, n_images: int, warmup=None) -> dict:
    """Run ``warmup`` (untimed), then ``fn``; images/s and peak memory of the timed run."""
    if warmup is not None:
        warmup()
    gpu.sync()
    gpu.reset_peak()
    t = time.perf_counter()
    fn()
    gpu.sync()
    seconds = time.perf_counter() - t
    return {
        "images": n_images,
        "seconds": round(seconds, 3),
        "images_per_second": round(n_images / seconds, 1),
        "peak_memory_gib": gpu.peak_gib(),
    }


def run_blipcap(args, checkpoint, jpegs, device, dtype, gpu: Gpu) -> dict:
    from blipcap import Captioner
    from blipcap.backends.cuda import FastPath, FastPathOptions
    from blipcap.backends.cuda_pipeline import caption_stream

    cap = Captioner(str(checkpoint), backend="torch", device=device, dtype=dtype)
    if cap.backend.fast_path is None:  # CPU (smoke): exercise the static path all the same
        cap.backend.fast_path = FastPath(cap.backend, FastPathOptions(step="graphs"))
    b, t = args.batch_size, args.tokens
    # guard=False: random weights loop, and the guard would decode them again; transformers does not.
    greedy = dict(min_new_tokens=t, max_new_tokens=t, guard=False)
    beam3 = dict(preset="coco", min_length=20, max_length=20)
    warm = jpegs[: min(len(jpegs), 2 * b)]  # two full batches: captures every graph the run uses

    def stream(items, overlap=True, **kw):
        def go():
            out = list(caption_stream(cap, items, batch_size=b, overlap=overlap, **kw))
            assert len(out) == len(items) and all(r.ok for r in out), [
                r.error for r in out if not r.ok
            ][:3]

        return go

    def plain(items, **kw):
        def go():
            out = cap.caption(items, batch_size=b, **kw)
            assert all(r.ok for r in out)

        return go

    runs = {}
    n = len(jpegs)
    print(f"blipcap greedy, overlapped pipeline, batch {b} ...", file=sys.stderr)
    runs["greedy"] = timed(gpu, stream(jpegs, **greedy), n, stream(warm, **greedy))
    print("blipcap beam 3 (coco shape) ...", file=sys.stderr)
    runs["beam3"] = timed(gpu, stream(jpegs, **beam3), n, stream(warm, **beam3))
    print("blipcap greedy without encoder/decoder overlap ...", file=sys.stderr)
    runs["greedy_no_overlap"] = timed(gpu, stream(jpegs, overlap=False, **greedy), n)
    print("blipcap greedy through Captioner.caption (per batch) ...", file=sys.stderr)
    runs["greedy_captioner"] = timed(gpu, plain(jpegs, **greedy), n)

    subset = jpegs[: min(n, args.step_images)]
    steps = {}
    for mode in ("graphs", "compile", "eager"):
        if mode == "compile" and args.skip_compile:
            continue
        cap.backend.fast_path = FastPath(cap.backend, FastPathOptions(step=mode))
        print(f"decode steps: {mode} ...", file=sys.stderr)
        t0 = time.perf_counter()
        stream(warm, **greedy)()  # capture / compile
        gpu.sync()
        first = time.perf_counter() - t0
        steps[mode] = timed(gpu, stream(subset, **greedy), len(subset))
        steps[mode]["warmup_seconds"] = round(first, 2)
        steps[mode]["effective_mode"] = cap.backend.fast_path.step_mode
    runs["decode_steps"] = steps
    runs["fastest_decode_step"] = max(steps, key=lambda m: steps[m]["images_per_second"])
    return runs


def run_baselines(args, checkpoint, jpegs, device, gpu: Gpu) -> dict:
    import torch
    from PIL import Image
    from transformers import BlipForConditionalGeneration, BlipProcessor, pipeline

    dtype = torch.float16 if gpu.cuda else torch.float32  # fp16 matmuls are not a CPU thing
    t = args.tokens
    out = {}

    def pil(items):
        return [Image.open(io.BytesIO(b)).convert("RGB") for b in items]

    # transformers 5.x removed "image-to-text"; "image-text-to-text" needs a text per image.
    pipe = pipeline("image-text-to-text", model=str(checkpoint), dtype=dtype, device=device)
    sub = jpegs[: min(len(jpegs), args.pipeline_images)]
    gen = dict(min_new_tokens=t, max_new_tokens=t)

    def run_pipe(items):
        def go():
            images = pil(items)
            res = pipe(images=images, text=[""] * len(images), batch_size=32, generate_kwargs=gen)
            assert len(res) == len(items)

        return go

    print("baseline: transformers pipeline fp16 batch_size=32 ...", file=sys.stderr)
    out["pipeline_fp16_bs32"] = timed(gpu, run_pipe(sub), len(sub), run_pipe(sub[:64]))

    model = (
        BlipForConditionalGeneration.from_pretrained(str(checkpoint), dtype=dtype).to(device).eval()
    )
    processor = BlipProcessor.from_pretrained(str(checkpoint))
    b = 256 if gpu.cuda else args.batch_size
    model_seconds = [0.0]

    def run_generate(items):
        def go():
            for i in range(0, len(items), b):
                inputs = processor(images=pil(items[i : i + b]), return_tensors="pt")
                pixels = inputs["pixel_values"].to(device, dtype)
                gpu.sync()
                t0 = time.perf_counter()
                with torch.no_grad():
                    ids = model.generate(pixel_values=pixels, **gen)
                gpu.sync()
                model_seconds[0] += time.perf_counter() - t0
                assert ids.shape[1] >= t

        return go

    print(f"baseline: BlipForConditionalGeneration.generate fp16 batch {b} ...", file=sys.stderr)
    run_generate(jpegs[:b])()
    model_seconds[0] = 0.0
    out["generate_fp16_bs256"] = timed(gpu, run_generate(jpegs), len(jpegs))
    out["generate_fp16_bs256"]["model_only_images_per_second"] = round(
        len(jpegs) / model_seconds[0], 1
    )
    return out


def logit_cosine(checkpoint, jpegs, device, tokens: int, n: int = 8) -> dict:
    """Cosine of bf16/fp16 next-token logits to fp32's, teacher-forced along fp32's greedy path."""
    import torch

    from blipcap import Captioner

    ref = Captioner(str(checkpoint), backend="torch", device=device, dtype="float32")
    pixels = np.stack([ref.load(b) for b in jpegs[:n]])
    bos = torch.full((len(pixels), 1), ref.config.text.bos_token_id, device=ref.device)
    length = tokens + 1
    s = ref.backend.start(pixels, 1, length)
    logits, feed, path = s.step(bos), bos, []
    for _ in range(tokens):
        path.append(logits)
        feed = logits.argmax(-1, keepdim=True)
        logits = s.step(feed)
    fed = [bos] + [p.argmax(-1, keepdim=True) for p in path[:-1]]
    out = {}
    dtypes = ["bfloat16", "float16"] if device.startswith("cuda") else ["bfloat16"]
    for dt in dtypes:
        other = Captioner(str(checkpoint), backend="torch", device=device, dtype=dt)
        s = other.backend.start(pixels, 1, length)
        cos, agree = [], []
        for ids, want in zip(fed, path, strict=True):
            got = s.step(ids).float()
            cos.append(torch.nn.functional.cosine_similarity(got, want.float(), dim=-1))
            agree.append((got.argmax(-1) == want.argmax(-1)).float())
        c = torch.stack(cos)
        out[dt] = {
            "mean": round(float(c.mean()), 6),
            "min": round(float(c.min()), 6),
            "top1_agreement": round(float(torch.stack(agree).mean()), 4),
            "images": len(pixels),
            "positions": tokens,
        }
        del other
    return out


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny checkpoint, few images, any device; no results file",
    )
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=20, help="new tokens, forced (min = max)")
    ap.add_argument(
        "--dtype", default="auto", help="blipcap's dtype (auto: bfloat16 where supported)"
    )
    ap.add_argument(
        "--pipeline-images", type=int, default=512, help="images for the (slow) pipeline baseline"
    )
    ap.add_argument("--step-images", type=int, default=1024, help="images per decode-step variant")
    ap.add_argument(
        "--skip-compile", action="store_true", help="leave out the torch.compile variant"
    )
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument(
        "--out", type=Path, default=None, help="results file [benchmarks/results/gpu-<device>.json]"
    )
    args = ap.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        ap.error(
            "no CUDA GPU visible to PyTorch; this benchmark measures a GPU (use --smoke to check it runs)"
        )
    if args.smoke:
        args.images, args.batch_size, args.tokens = 12, 4, 5
        args.pipeline_images, args.step_images = 6, 8
        args.skip_compile = True  # compile is tested by the unit tests; minutes of CPU here
    device = "cuda" if cuda else "cpu"
    gpu = Gpu(torch, device)
    started = time.perf_counter()
    checkpoint = (
        random_checkpoint("tiny", seed=0) if args.smoke else random_checkpoint("large", seed=3)
    )
    size = (64, 48) if args.smoke else (640, 480)
    jpegs = synthetic_jpegs(args.images, *size)
    dtype = args.dtype if args.dtype != "auto" else ("float32" if not cuda else "auto")

    runs = run_blipcap(args, checkpoint, jpegs, device, dtype, gpu)
    gpu.release()  # so that each stage's peak memory is its own
    baselines = {} if args.skip_baselines else run_baselines(args, checkpoint, jpegs, device, gpu)
    gpu.release()
    cosine = logit_cosine(checkpoint, jpegs, device, args.tokens)

    import transformers

    from blipcap import __version__

    name = torch.cuda.get_device_name() if cuda else "cpu"
    blipcap_peak = [
        r["peak_memory_gib"] for r in (runs["greedy"], runs["beam3"]) if r["peak_memory_gib"]
    ]
    result = {
        "device": name,
        "smoke": args.smoke,
        "checkpoint_shape": "tiny" if args.smoke else "large",
        "random_weights": True,
        "images": args.images,
        "image_size": f"{size[0]}x{size[1]}",
        "new_tokens_forced": args.tokens,
        "batch_size": args.batch_size,
        "dtype": runs_dtype(checkpoint, device, dtype),
        "images_per_second": runs["greedy"]["images_per_second"],
        "beam3_images_per_second": runs["beam3"]["images_per_second"],
        "baseline_images_per_second": baselines.get("generate_fp16_bs256", {}).get(
            "images_per_second"
        ),
        "pipeline_baseline_images_per_second": baselines.get("pipeline_fp16_bs32", {}).get(
            "images_per_second"
        ),
        "peak_memory_gib": max(blipcap_peak) if blipcap_peak else None,
        "goals": {"greedy_images_per_second": 1000, "beam3_images_per_second": 800},
        "logit_cosine_to_float32": cosine,
        "runs": runs,
        "baselines": baselines,
        "versions": {
            "blipcap": __version__,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
        },
        "machine": machine(),
        "total_seconds": round(time.perf_counter() - started, 1),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if result["baseline_images_per_second"]:
        result["speedup_vs_generate"] = round(
            result["images_per_second"] / result["baseline_images_per_second"], 2
        )
    print(json.dumps(result, indent=2))
    if not args.smoke:
        path = args.out or RESULTS / f"gpu-{slug(name)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return result


def runs_dtype(checkpoint, device: str, dtype: str) -> str:
    from blipcap.backends.torch import resolve_dtype

    return resolve_dtype(dtype, device)


if __name__ == "__main__":
    main()
