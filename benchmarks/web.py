"""Per-image latency in the browser (onnxruntime-web, WASM) against native ONNX Runtime.

The same ONNX export (random weights, ``--shape``; speed does not depend on
weight values once the generated length is forced) is run

* natively: blipcap's ONNX backend (Python, onnxruntime on the CPU) with 1
  thread and with ``--threads`` threads;
* in headless Chromium from a ``blipcap export web`` bundle: WASM on one
  thread (page not cross-origin isolated) and WASM with ``--threads``
  threads (served with COOP/COEP).

Every configuration captions the same images from decoded RGB pixels
(preprocessing included: Pillow natively, the bundle's JavaScript in the
browser), one image at a time, greedy and beam 3 with exactly
``--tokens`` new tokens. One warm-up image, then the median, min and max
over ``--images`` images; tokens are checked equal across all
configurations. The machine's load average is recorded before and after.

    python benchmarks/web.py                   # writes benchmarks/results/web-<host>.{json,md}
    python benchmarks/web.py --shape tiny --images 3 --modes greedy
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, random_checkpoint, synthetic_images  # noqa: E402

EXPORTS = ROOT / ".cache" / "onnx"
ORT_DIST = ROOT / "tests" / "e2e" / "node_modules" / "onnxruntime-web" / "dist"
CHROMIUM = os.environ.get("BLIPCAP_CHROMIUM", "/usr/bin/chromium")
SEEDS = {"tiny": 0, "small": 1, "base": 3, "large": 3}


def onnx_export(shape: str) -> Path:
    """The float32 ONNX export of the random checkpoint, made once and cached."""
    ckpt = random_checkpoint(shape, seed=SEEDS[shape])
    out = EXPORTS / ckpt.name
    if not (out / "blipcap_onnx.json").exists():
        from blipcap.export import export_onnx

        export_onnx(ckpt, out, verify_images=1)
    return out


def options(mode: str, tokens: int) -> dict:
    return {
        "num_beams": 3 if mode == "beam3" else 1,
        "max_new_tokens": tokens,
        "min_new_tokens": tokens,
    }


def native(onnx_dir: Path, images, mode: str, tokens: int, threads: int) -> dict:
    """Run in a fresh process per thread count (ONNX Runtime fixes it per session)."""
    args = [str(onnx_dir), mode, str(tokens), str(threads), str(len(images))]
    proc = subprocess.run(
        [sys.executable, __file__, "--native-worker", *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def native_worker(onnx_dir: str, mode: str, tokens: str, threads: str, n: str) -> None:
    from blipcap.backends.onnx import OnnxBackend
    from blipcap.captioner import Captioner
    from blipcap.decoding import generate
    from blipcap.options import resolve_options

    os.environ["BLIPCAP_ONNX_THREADS"] = threads
    cap = Captioner(onnx_dir, backend="onnx", device="cpu")
    assert isinstance(cap.backend, OnnxBackend) and cap.backend.threads == int(threads)
    opts = resolve_options(**options(mode, int(tokens)))
    prompt = cap.tokenizer.prompt_ids(None)
    times, out = [], []
    for i, image in enumerate([synthetic_images(1, seed=99)[0], *synthetic_images(int(n))]):
        t0 = time.perf_counter()
        pixels = cap.preprocess.batch([image])
        ids = generate(cap.backend, pixels, prompt, opts, cap.special)[0][0]
        if i:  # the first image warms up
            times.append((time.perf_counter() - t0) * 1000)
            out.append(ids)
    print(json.dumps({"ms": times, "tokens": out, "threads": int(threads)}))


def browser(bundle: Path, images, modes, tokens: int, threads: int, isolated: bool) -> dict:
    from playwright.sync_api import sync_playwright

    from blipcap.web.serving import serve_directory

    server, url = serve_directory(bundle, isolated=isolated)
    pixels = [
        {"data": base64.b64encode(im.convert("RGBA").tobytes()).decode(), "w": im.width,
         "h": im.height}
        for im in [synthetic_images(1, seed=99)[0], *images]
    ]  # fmt: skip
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = b.new_page()
            page.goto(f"{url}index.html?backend=wasm&threads={threads}")
            t0 = time.perf_counter()
            page.wait_for_function("window.blipcap || window.blipcapError", timeout=600_000)
            print(f"page loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            error = page.evaluate("window.blipcapError")
            assert error is None, error
            info = page.evaluate(
                "({threads: blipcap.threads, isolated: crossOriginIsolated,"
                " agent: navigator.userAgent})"
            )
            results = {}
            for mode in modes:
                print(f"chromium {threads} thread(s): {mode}", file=sys.stderr)
                results[mode] = page.evaluate(
                    """async ([images, opts]) => {
                        const ms = [], tokens = [];
                        for (const [i, im] of images.entries()) {
                            const rgba = Uint8ClampedArray.from(atob(im.data), (c) => c.charCodeAt(0));
                            const t0 = performance.now();
                            const r = await blipcap.captionPixels(rgba, im.w, im.h,
                                                                 { preset: "default", ...opts });
                            if (i) { ms.push(performance.now() - t0); tokens.push(r.tokens[0]); }
                        }
                        return { ms, tokens };
                    }""",
                    [pixels, options(mode, tokens)],
                )
            b.close()
    finally:
        server.shutdown()
    return {"info": info, "results": results}


def summary(ms: list[float]) -> dict:
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "n": len(ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="base", choices=sorted(SEEDS))
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--modes", nargs="+", default=["greedy", "beam3"])
    ap.add_argument("--out", default=None, help="results name (default web-<host>)")
    args = ap.parse_args()

    from blipcap.export.web import export_web

    onnx_dir = onnx_export(args.shape)
    images = synthetic_images(args.images)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = export_web(onnx_dir, Path(tmp) / "web", ort_dist=ORT_DIST, webgpu=False).out
        for threads, isolated in ((1, False), (args.threads, True)):
            r = browser(bundle, images, args.modes, args.tokens, threads, isolated)
            for mode in args.modes:
                rows.append({
                    "impl": "chromium-wasm", "mode": mode, "threads": r["info"]["threads"],
                    "isolated": r["info"]["isolated"], **summary(r["results"][mode]["ms"]),
                    "tokens": r["results"][mode]["tokens"],
                })  # fmt: skip
            agent = r["info"]["agent"]
    for threads in (1, args.threads):
        for mode in args.modes:
            r = native(onnx_dir, images, mode, args.tokens, threads)
            rows.append({"impl": "native-ort", "mode": mode, "threads": threads,
                         **summary(r["ms"]), "tokens": r["tokens"]})  # fmt: skip
    for mode in args.modes:
        same = {json.dumps(row["tokens"]) for row in rows if row["mode"] == mode}
        for row in rows:
            if row["mode"] == mode:
                row["tokens_equal_across_impls"] = len(same) == 1
    load_after = os.getloadavg()
    import onnxruntime

    report = {
        "benchmark": "web",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "shape": args.shape,
        "new_tokens": args.tokens,
        "images": args.images,
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "chromium": agent,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_web": json.loads((ORT_DIST.parent / "package.json").read_text())["version"],
        "rows": [{k: v for k, v in row.items() if k != "tokens"} for row in rows],
        "tokens": {f"{r['impl']}-{r['mode']}-{r['threads']}": r["tokens"] for r in rows},
    }
    name = args.out or f"web-{socket.gethostname()}"
    out = ROOT / "benchmarks" / "results"
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Browser (onnxruntime-web WASM) vs native ONNX Runtime - {args.shape} shape",
        "",
        f"{report['date']}; {report['machine'].get('cpu', '?')}, {report['machine']['cpus']} CPUs;"
        f" load average {load_before[0]:.1f} before, {load_after[0]:.1f} after;"
        f" {args.tokens} new tokens forced; {args.images} images (640x480), one at a time.",
        f"Chromium: {agent}; onnxruntime {report['onnxruntime']},"
        f" onnxruntime-web {report['onnxruntime_web']}.",
        "",
        "| implementation | mode | threads | median ms/image | min | max | vs native (same threads) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        base = next(
            r for r in report["rows"]
            if r["impl"] == "native-ort" and r["mode"] == row["mode"] and r["threads"] == row["threads"]
        )  # fmt: skip
        lines.append(
            f"| {row['impl']} | {row['mode']} | {row['threads']} | {row['median_ms']:.0f} |"
            f" {row['min_ms']:.0f} | {row['max_ms']:.0f} | {row['median_ms'] / base['median_ms']:.2f}x |"
        )
    equal = all(r["tokens_equal_across_impls"] for r in report["rows"])
    lines += ["", f"Tokens equal across all configurations: {'yes' if equal else 'NO'}."]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--native-worker":
        native_worker(*sys.argv[2:])
    else:
        main()
