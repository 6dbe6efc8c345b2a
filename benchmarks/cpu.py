"""CPU: transformers fp32 against blipcap torch fp32, ONNX fp32 and ONNX int8, in one run.

BLIP-large shape with random weights (speed does not depend on weight values
once the generated length is forced: 20 new tokens, min = max). Greedy and
beam 3, batch 1 and 8.

A cloud VM's CPU speed drifts (by 30% within minutes on the machine these
figures come from, and by 2x at times), so implementations are compared in
*paired rounds*: for each mode and batch size every implementation is loaded
in a process of its own and warmed up, then each round has every
implementation caption the same batch once, back to back (the order
alternates from round to round), and the ratio to the baseline is taken
within the round. Each implementation reports

* images/s (the median round's) and "vs baseline": the median of the
  per-round ratios to the baseline (transformers ``generate``) of the same
  mode and batch - runs seconds apart, not minutes;
* peak RSS (the process's high-water mark: loading included) and its ratio;
* cold start: from launching the process to the first caption of one image
  (imports, model load, ONNX Runtime graph optimization, one image);
* where the time goes: the vision encoder (with the cross-attention
  keys/values) against everything else (decoding), medians over the rounds;
* how much CPU other programs used (busy time of the whole machine minus
  the workers' own, in cores; the worst round). A round in which others
  used more than ``--tolerance`` cores is run again (up to ``--attempts``
  times);
* a probe of the machine's fp32 matrix-product speed after each round
  (the median is reported).

Implementations: ``transformers`` (fp32 ``generate``, the baseline),
``blipcap-torch`` (fp32), ``onnx-fp32``, ``onnx-int8`` (vision encoder and
decoder int8) and ``onnx-int8-vision`` (vision encoder int8, decoder fp32).

The ONNX exports of the checkpoint are made once and cached under
``.cache/onnx/`` (``blipcap export onnx``, with its verification).

    python benchmarks/cpu.py                       # writes benchmarks/results/cpu-<host>.{json,md}
    python benchmarks/cpu.py --impls onnx-int8 --modes greedy --batches 1 --rounds 2
    python benchmarks/cpu.py --impls transformers onnx-int8 --modes greedy --batches 1 --rounds 15
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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

IMPLS = ("transformers", "blipcap-torch", "onnx-fp32", "onnx-int8", "onnx-int8-vision")
MODES = {"greedy": 1, "beam3": 3}
EXPORTS = ROOT / ".cache" / "onnx"


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark (VmHWM).

    Not ``getrusage``'s ru_maxrss: Linux carries that across fork and exec, so a
    worker would report its (larger) parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


class StageTimer:
    """Wraps a callable and adds up the seconds spent in it."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t


def worker(impl: str, model: str, mode: str, batch: int, tokens: int, launched: float) -> None:
    """Load ``impl``, caption one image (cold start) and warm up, then serve ``run`` requests.

    Speaks JSON lines on stdout: one "ready" line, one line per ``run`` read from
    stdin (seconds, vision seconds, the process's CPU seconds), and the peak RSS
    on ``exit``.
    """
    beams = MODES[mode]
    images = synthetic_images(batch)
    if impl == "transformers":
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor

        net = BlipForConditionalGeneration.from_pretrained(model).eval()
        processor = BlipProcessor.from_pretrained(model)
        timer = StageTimer(net.vision_model.forward)
        net.vision_model.forward = timer

        def run(imgs):
            with torch.no_grad():
                inputs = processor(images=imgs, return_tensors="pt")
                out = net.generate(
                    **inputs, min_new_tokens=tokens, max_new_tokens=tokens, num_beams=beams
                )
            assert out.shape == (len(imgs), tokens + 1), out.shape
    else:
        from blipcap import Captioner

        if impl == "blipcap-torch":
            cap = Captioner(model, backend="torch", device="cpu", dtype="float32")
        else:
            cap = Captioner(model, backend="onnx", device="cpu")
        timer = StageTimer(cap.backend.start)  # the vision encoder + cross-attention K/V
        cap.backend.start = timer

        def run(imgs):
            results = cap.caption(
                imgs, batch_size=len(imgs), num_beams=beams, min_new_tokens=tokens,
                max_new_tokens=tokens, clean_artifacts=False, guard=False,
            )  # fmt: skip
            assert all(r.ok for r in results), [r.error for r in results]

    def reply(**fields) -> None:
        print(json.dumps(fields), flush=True)

    run(images[:1])
    cold = time.time() - launched
    run(images)  # warm-up at the measured batch size
    reply(ready=True, cold_start_seconds=cold)
    for line in sys.stdin:
        if line.strip() == "exit":
            break
        timer.seconds = 0.0
        cpu = cpu_seconds()
        t = time.perf_counter()
        run(images)
        reply(
            seconds=time.perf_counter() - t,
            vision_seconds=timer.seconds,
            cpu_seconds=cpu_seconds() - cpu,
        )
    reply(peak_rss_mib=peak_rss_mib())


def cpu_seconds() -> float:
    """CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Worker:
    """One implementation loaded in a process of its own, captioning on request."""

    def __init__(self, impl: str, model: str, mode: str, batch: int, tokens: int):
        self.impl = impl
        self.log = tempfile.TemporaryFile(mode="w+")  # stderr: read only if the worker fails
        args = [impl, model, mode, str(batch), str(tokens), repr(time.time())]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )  # fmt: skip
        self.ready = self._read()

    def _read(self) -> dict:
        # The worker's own prints (libraries') may come first; the reply is the last JSON line.
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                self.log.seek(0)
                raise RuntimeError(f"worker {self.impl} failed:\n{self.log.read()[-3000:]}")
            if line.startswith("{"):
                return json.loads(line)

    def request(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def run(self) -> dict:
        """One timed batch."""
        return self.request("run")

    def close(self) -> float:
        """Stop the worker; returns its peak RSS in MiB."""
        peak = self.request("exit")["peak_rss_mib"]
        self.proc.wait(timeout=60)
        self.log.close()
        return peak


def export_source_stamp() -> str:
    """A hash of the code that shapes an export: a cached export made by other code is stale."""
    import hashlib

    h = hashlib.sha256()
    src = ROOT / "src" / "blipcap"
    for path in sorted([*(src / "export").glob("*.py"), *(src / "model").glob("*.py")]):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def ensure_export(checkpoint: Path, quantize: str | None) -> Path:
    out = EXPORTS / f"{checkpoint.name}-{quantize or 'fp32'}"
    stamp, source = out / ".source-stamp", export_source_stamp()
    fresh = stamp.exists() and stamp.read_text() == source
    if not (out / "blipcap_onnx.json").exists() or not fresh:
        from blipcap.export import export_onnx

        print(f"exporting {out.name} (once) ...", file=sys.stderr)
        report = export_onnx(
            str(checkpoint), out, quantize=quantize, verify_images=2, overwrite=True
        )
        print(report.summary(), file=sys.stderr)
        stamp.write_text(source)
    return out


def paired_rounds(
    workers: dict[str, Worker], rounds: int, attempts: int, tolerance: float
) -> list[dict]:
    """Every round runs every worker once, back to back, the order alternating.

    A round in which other programs used more than ``tolerance`` cores (the
    machine's busy time during the round minus the workers' own) is run again,
    up to ``attempts`` times; the cleanest is kept.
    """
    impls = list(workers)
    done = []
    for r in range(rounds):
        order = impls if r % 2 == 0 else impls[::-1]
        best = None
        for _ in range(attempts):
            wait_for_quiet(60, sample=1.0)
            busy, t0 = busy_cpu_seconds(), time.time()
            runs = {impl: workers[impl].run() for impl in order}
            own = sum(x["cpu_seconds"] for x in runs.values())
            others = max(0.0, (busy_cpu_seconds() - busy - own) / (time.time() - t0))
            if best is None or others < best["others_cores"]:
                best = {"runs": runs, "others_cores": others}
            if others <= tolerance:
                break
            print(f"  {others:.2f} cores used by others; running the round again", file=sys.stderr)
        best["probe_gflops"] = probe_gflops()
        done.append(best)
        line = ", ".join(f"{i} {best['runs'][i]['seconds']:.2f} s" for i in impls)
        print(f"  round {r + 1}/{rounds}: {line}", file=sys.stderr, flush=True)
    return done


def summarize(
    impls: list[str], rounds: list[dict], ready: dict, peaks: dict, batch: int
) -> list[dict]:
    """One row per implementation: medians over the rounds, ratios taken within each round."""
    rows = []
    for impl in impls:
        runs = [rnd["runs"][impl] for rnd in rounds]
        bases = [rnd["runs"].get("transformers") for rnd in rounds]
        seconds = [x["seconds"] for x in runs]
        vision = [x["vision_seconds"] for x in runs]
        speed = [
            b["seconds"] / x["seconds"] if b else float("nan")
            for x, b in zip(runs, bases, strict=True)
        ]
        base_peak = peaks.get("transformers")
        rows.append(
            {
                "impl": impl,
                "batch": batch,
                "images_per_second": batch / statistics.median(seconds),
                "speed_ratio": statistics.median(speed),
                "round_ratios": speed,
                "all_seconds": seconds,
                "vision_seconds_per_batch": statistics.median(vision),
                "other_seconds_per_batch": statistics.median(
                    s - v for s, v in zip(seconds, vision, strict=True)
                ),
                "cold_start_seconds": ready[impl]["cold_start_seconds"],
                "peak_rss_mib": peaks[impl],
                "rss_ratio": peaks[impl] / base_peak if base_peak else float("nan"),
                "others_cores": max(rnd["others_cores"] for rnd in rounds),
                "probe_gflops": statistics.median(rnd["probe_gflops"] for rnd in rounds),
            }
        )
    return rows


def measure(
    impls: list[str], models: dict, mode: str, batch: int, args: argparse.Namespace
) -> list[dict]:
    """Load every implementation (one at a time, so cold starts do not overlap), then pair them."""
    workers: dict[str, Worker] = {}
    try:
        for impl in impls:
            wait_for_quiet(args.max_wait)
            workers[impl] = Worker(impl, str(models[impl]), mode, batch, args.tokens)
            print(
                f"{mode} batch {batch}: {impl} loaded, cold start "
                f"{workers[impl].ready['cold_start_seconds']:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        rounds = paired_rounds(workers, args.rounds, args.attempts, args.tolerance)
        peaks = {impl: w.close() for impl, w in workers.items()}
    finally:
        for w in workers.values():
            if w.proc.poll() is None:
                w.proc.kill()
    ready = {impl: w.ready for impl, w in workers.items()}
    rows = summarize(impls, rounds, ready, peaks, batch)
    for row in rows:
        row.update(mode=mode, beams=MODES[mode], tokens=args.tokens, shape=args.shape)
    return rows


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait: float, threshold: float = 0.15, sample: float = 5.0) -> float:
    """Wait until other programs use under ``threshold`` cores; return the last sample."""
    deadline = time.time() + max_wait
    while True:
        before = busy_cpu_seconds()
        time.sleep(sample)
        used = (busy_cpu_seconds() - before) / sample
        if used < threshold or time.time() > deadline:
            return used
        print(f"  machine busy ({used:.2f} cores in use by others); waiting", file=sys.stderr)


def probe_gflops() -> float:
    """The machine's fp32 matrix-product speed right now (a cloud VM's CPU speed drifts)."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((768, 768), dtype=np.float32)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(10):
            a @ a
        best = min(best, time.perf_counter() - t)
    return 10 * 2 * 768**3 / best / 1e9


def markdown(rows: list[dict], info: dict) -> str:
    rounds = len(rows[0]["round_ratios"])
    lines = [
        f"CPU: {info.get('cpu', '?')}, {info.get('cpus')} cores ({', '.join(info.get('isa', []))}); "
        f"torch {info.get('torch')}, transformers {info.get('transformers')}, "
        f"onnxruntime {info.get('onnxruntime')}. BLIP-{rows[0]['shape']} shape, random weights, "
        f"{rows[0]['tokens']} new tokens forced. {rounds} paired round(s): in each, every "
        "implementation captions the same batch once, back to back; images/s and the times are "
        'medians over the rounds, "vs baseline" the median of the per-round ratios.',
        "",
        "| mode | batch | implementation | images/s | vs baseline | peak RSS (MiB) | RSS vs baseline "
        "| cold start (s) | vision s/batch | decoding s/batch | others (cores) | probe GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['batch']} | {r['impl']} | {r['images_per_second']:.3f} "
            f"| {r['speed_ratio']:.2f}x | {r['peak_rss_mib']:.0f} | {r['rss_ratio']:.0%} "
            f"| {r['cold_start_seconds']:.1f} | {r['vision_seconds_per_batch']:.2f} "
            f"| {r['other_seconds_per_batch']:.2f} | {r['others_cores']:.2f} | {r['probe_gflops']:.0f} |"
        )
    compared = [r for r in rows if r["impl"] != "transformers"]
    if rounds > 1 and compared:
        lines += ["", "Per-round ratios to the baseline:", ""]
        for r in compared:
            ratios = ", ".join(f"{x:.2f}" for x in r["round_ratios"])
            lines.append(f"- {r['mode']}, batch {r['batch']}, {r['impl']}: {ratios}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shape", default="large", choices=["tiny", "small", "base", "large"])
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="Paired rounds per mode and batch size: each runs every implementation once, "
        "back to back, and the ratio to the baseline is the median of the rounds' ratios.",
    )
    ap.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="Runs of a round at most, when other programs compete for the CPU.",
    )
    ap.add_argument(
        "--max-wait", type=float, default=600, help="Seconds to wait for a quiet machine."
    )
    ap.add_argument(
        "--tolerance", type=float, default=0.2, help="Cores others may use during a run."
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="JSON path [benchmarks/results/cpu-<host>.json]"
    )
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        impl, model, mode, batch, tokens, launched = args.worker
        worker(impl, model, mode, int(batch), int(tokens), float(launched))
        return

    checkpoint = random_checkpoint(args.shape)
    models = {"transformers": checkpoint, "blipcap-torch": checkpoint}
    if "onnx-fp32" in args.impls:
        models["onnx-fp32"] = ensure_export(checkpoint, None)
    for quantize in ("int8", "int8-vision"):
        if f"onnx-{quantize}" in args.impls:
            models[f"onnx-{quantize}"] = ensure_export(checkpoint, quantize)
    rows = []
    for mode in args.modes:
        for batch in args.batches:
            rows += measure(args.impls, models, mode, batch, args)
    info = machine()
    result = {
        "benchmark": "cpu",
        "method": "paired rounds",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "shape": args.shape,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "machine": info,
        "results": rows,
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"cpu-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(rows, info)
    out.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
