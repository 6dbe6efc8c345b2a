"""Peak memory by batch x beams x caption length: measured on this CPU, computed for GPUs.

CPU (measured): for each model (BLIP-large and BLIP-base shapes, random
weights) and backend (torch fp32, ONNX int8), one process loads the model,
then decodes one batch per setting (forced length), smallest first; the peak
resident set of each decode is read from the kernel's high-water mark
(reset before each, see ``blipcap.memory.PeakMeter``). Next to each
measurement: the memory model's prediction, ``RSS after load + batch x
per_image`` (``blipcap.batching.estimate_per_image``).

GPU (computed, not measured): ``weights + CUDA context + batch x per_image``
with bf16 activations - the formula of ``blipcap/batching.py``, for sizing a
card before buying or renting it. ``--batch-size auto`` measures the real
figure on the card (and backs off on out-of-memory errors).

    python benchmarks/memory.py          # writes benchmarks/results/memory-<host>.{json,md}
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, random_checkpoint  # noqa: E402

BATCHES = (1, 8)
BEAMS = (1, 3)
LENGTHS = (20, 60)
GPU_BATCHES = (1, 32, 128)
CUDA_CONTEXT_MIB = 500  # CUDA context + cuBLAS workspace, typical for torch 2.x; varies by card


def captioning_params(checkpoint: Path) -> int:
    """Parameters of the captioning model, read from the safetensors header (no weights loaded)."""
    import math
    import struct

    with open(checkpoint / "model.safetensors", "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return sum(
        math.prod(t["shape"])
        for name, t in header.items()
        if name != "__metadata__" and name.startswith(("vision_model.", "text_decoder."))
    )


def worker(shape: str, backend: str, model: str) -> list[dict]:
    import numpy as np

    from blipcap import Captioner
    from blipcap.batching import estimate_per_image
    from blipcap.memory import PeakMeter
    from blipcap.model.processing import synthetic_images

    if backend == "torch":
        cap = Captioner(model, backend="torch", device="cpu", dtype="float32")
    else:
        cap = Captioner(model, backend="onnx", device="cpu")
    size = cap.preprocess.size[0]
    settings = sorted(
        ((b, k, n) for b in BATCHES for k in BEAMS for n in LENGTHS),
        key=lambda s: estimate_per_image(cap.config, s[1], s[2] + 1)["total"] * s[0],
    )
    rows = []
    for batch, beams, new in settings:
        pixels = synthetic_images(batch, size)
        opts = dict(num_beams=beams, min_new_tokens=new, max_new_tokens=new)
        from blipcap.options import CaptionOptions

        with PeakMeter("cpu") as meter:
            tokens = cap.generate_tokens(pixels, CaptionOptions(**opts))
        assert all(len(t[0]) == new for t in tokens)
        rows.append(
            {
                "shape": shape, "backend": backend, "dtype": cap.dtype, "batch": batch,
                "beams": beams, "new_tokens": new, "peak_mib": meter.peak / 2**20,
            }
        )  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        del pixels, tokens
        np.zeros(1)
    return rows


def gpu_rows(shape: str) -> list[dict]:
    from blipcap.batching import estimate_per_image
    from blipcap.hub import load_json
    from blipcap.model.config import BlipConfig

    checkpoint = random_checkpoint(shape)
    config = BlipConfig.from_dict(load_json(checkpoint / "config.json"))
    weights = captioning_params(checkpoint) * 2 / 2**20  # bf16
    rows = []
    for batch in GPU_BATCHES:
        for beams in BEAMS:
            for new in LENGTHS:
                per_image = estimate_per_image(config, beams, new + 1, 2, "torch")["total"]
                rows.append(
                    {
                        "shape": shape, "batch": batch, "beams": beams, "new_tokens": new,
                        "computed_mib": weights + CUDA_CONTEXT_MIB + batch * per_image / 2**20,
                    }
                )  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shapes", nargs="+", default=["large", "base"])
    ap.add_argument("--backends", nargs="+", default=["torch", "onnx-int8"])
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--render", type=Path, default=None, help="Re-render the tables of a results JSON."
    )
    args = ap.parse_args()
    if args.render:
        data = json.loads(args.render.read_text())
        shapes = sorted({r["shape"] for r in data["cpu_measured"]}, key=lambda s: s != "large")
        write(
            data["cpu_measured"], shapes, data["machine"], args.out or args.render, data.get("date")
        )
        return
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return

    from cpu import ensure_export

    cpu = []
    for shape in args.shapes:
        checkpoint = random_checkpoint(shape)
        for backend in args.backends:
            model = checkpoint if backend == "torch" else ensure_export(checkpoint, "int8")
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", shape, backend, str(model)],
                capture_output=True, text=True,
            )  # fmt: skip
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-3000:])
            cpu += json.loads(proc.stdout.strip().splitlines()[-1])
    out = args.out or ROOT / "benchmarks" / "results" / f"memory-{socket.gethostname()}.json"
    if out.exists():  # keep the rows of models/backends not measured this time
        done = {(r["shape"], r["backend"]) for r in cpu}
        old = json.loads(out.read_text())["cpu_measured"]
        cpu = [r for r in old if (r["shape"], r["backend"]) not in done] + cpu
    shapes = sorted({r["shape"] for r in cpu}, key=lambda s: s != "large")
    write(cpu, shapes, machine(), out)


def per_image_rows(cpu: list[dict]) -> list[dict]:
    """Measured per-image cost (slope from batch 1 to 8) next to the formula's, per setting."""
    from blipcap.batching import estimate_per_image
    from blipcap.hub import load_json
    from blipcap.model.config import BlipConfig

    out = []
    keys = sorted(
        {(r["shape"], r["backend"], r["beams"], r["new_tokens"]) for r in cpu},
        key=lambda k: (k[0] != "large", k[1] != "torch", k[2], k[3]),
    )
    for shape, backend, beams, new in keys:
        peaks = {
            r["batch"]: r["peak_mib"]
            for r in cpu
            if (r["shape"], r["backend"], r["beams"], r["new_tokens"])
            == (shape, backend, beams, new)
        }
        lo, hi = min(peaks), max(peaks)
        config = BlipConfig.from_dict(load_json(random_checkpoint(shape) / "config.json"))
        kind = "onnx" if backend.startswith("onnx") else "torch"
        formula = estimate_per_image(config, beams, new + 1, 4, kind)["total"] / 2**20
        measured = (peaks[hi] - peaks[lo]) / (hi - lo)
        out.append(
            {
                "shape": shape, "backend": backend, "beams": beams, "new_tokens": new,
                "measured_mib": measured, "formula_mib": formula,
            }
        )  # fmt: skip
    return out


def write(
    cpu: list[dict], shapes: list[str], info: dict, out: Path | None, date: str | None = None
) -> None:
    gpu = [row for shape in shapes for row in gpu_rows(shape)]
    settings = sorted({(r["batch"], r["beams"], r["new_tokens"]) for r in cpu})
    label = {(1, 1): "greedy", (1, 3): "beam 3"}
    head = " | ".join(
        f"B={b} {'greedy' if k == 1 else f'beam {k}'} {n} tok" for b, k, n in settings
    )
    lines = [
        f"CPU, measured ({info.get('cpu', '?')}, {info.get('cpus')} cores): peak resident memory "
        "of the process (MiB), weights and runtime included; B = batch, tok = new tokens.",
        "",
        f"| model | backend | {head} |",
        "|---|---|" + "---|" * len(settings),
    ]
    groups = sorted(
        {(r["shape"], r["backend"], r["dtype"]) for r in cpu}, key=lambda g: (g[0] != "large", g[1])
    )
    for shape, backend, _dtype in groups:
        cells = []
        for b, k, n in settings:
            row = next(
                r for r in cpu
                if (r["shape"], r["backend"], r["batch"], r["beams"], r["new_tokens"]) == (shape, backend, b, k, n)
            )  # fmt: skip
            cells.append(f"{row['peak_mib']:.0f}")
        name = "torch fp32" if backend == "torch" else f"{backend.replace('-', ' ')}"
        lines.append(f"| {shape} | {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per image (MiB): measured slope from batch 1 to batch 8, and the memory model's formula.",
        "",
        "| model | backend | beams | new tokens | measured | formula |",
        "|---|---|---|---|---|---|",
    ]
    for r in per_image_rows(cpu):
        lines.append(
            f"| {r['shape']} | {r['backend']} | {r['beams']} | {r['new_tokens']} "
            f"| {r['measured_mib']:.0f} | {r['formula_mib']:.0f} |"
        )
    gpu_settings = sorted({(r["beams"], r["new_tokens"]) for r in gpu})
    lines += [
        "",
        f"GPU, computed (not measured): bf16 weights + {CUDA_CONTEXT_MIB} MiB CUDA context + batch "
        "x the formula's per-image cost (MiB).",
        "",
        "| model | batch | "
        + " | ".join(f"{label.get((1, k), f'beam {k}')} {n} tok" for k, n in gpu_settings)
        + " |",
        "|---|---|" + "---|" * len(gpu_settings),
    ]
    for shape in shapes:
        for batch in GPU_BATCHES:
            cells = [
                f"{next(r for r in gpu if (r['shape'], r['batch'], r['beams'], r['new_tokens']) == (shape, batch, k, n))['computed_mib']:.0f}"
                for k, n in gpu_settings
            ]
            lines.append(f"| {shape} | {batch} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    out = out or ROOT / "benchmarks" / "results" / f"memory-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "memory",
                "date": date or datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "machine": info,
                "cpu_measured": cpu,
                "gpu_computed": gpu,
                "cuda_context_mib": CUDA_CONTEXT_MIB,
            },
            indent=2,
        )
        + "\n"
    )
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
