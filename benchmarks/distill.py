"""Distillation: does the student learn its teacher, and how much faster is it?

Two parts, each writing benchmarks/results/distill-<part>-<host>.{json,md}:

``agreement`` - a random-weight teacher of a mid shape (``small`` by default:
3 + 3 layers, 96 px) and a few hundred generated images (scikit-image photo
crops and synthetic images, benchmarks/distill_images.py); ``blipcap distill``
trains a student with fewer layers, and the held-back agreement with the
teacher (exact caption match, token agreement under teacher forcing) is
recorded before training and after each epoch. A random teacher's captions are
token soup, but a deterministic function of the image, which is what a
student has to imitate.

``speed`` - the BLIP-large shape (random weights; speed does not depend on the
values once the generated length is forced). Students of two sizes are built
from the teacher by blipcap's initialization (untrained: speed only),
exported with ``blipcap export onnx --quantize int8``, and measured in paired
rounds against the teacher int8 and transformers fp32 with cpu.py's helpers.

    python benchmarks/distill.py agreement --images 400 --val-images 100 --epochs 6
    python benchmarks/distill.py speed

``table`` - agreement runs side by side (one row per run: settings, held-back
agreement before training, after the first epoch, at the best and at the last
epoch), from their JSON files:

    python benchmarks/distill.py --tag ablation-vm table results/distill-agreement-*.json
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, random_checkpoint  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / ".cache" / "distill"


def agreement(args: argparse.Namespace) -> dict:
    from distill_images import make_images

    from blipcap.distill import DistillOptions, StudentShape, distill

    teacher = random_checkpoint(args.shape, seed=args.seed)
    images = WORK / f"images-{args.images}-{args.image_size}"
    if not images.exists():
        make_images(images, args.images, size=args.image_size, seed=args.seed)
    out = (
        Path(args.out)
        if args.out
        else WORK
        / (
            f"student-{args.shape}-v{args.vision_layers}-t{args.text_layers}-kl{args.kl_weight}"
            f"-lr{args.lr}-{args.augment}-n{args.images}"
            f"{'-vocab' if args.train_vocabulary else ''}"
        )
    )
    options = DistillOptions(
        student=StudentShape(args.vision_layers, args.text_layers),
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, kl_weight=args.kl_weight,
        max_new_tokens=args.max_new_tokens, val_images=args.val_images, augment=args.augment,
        freeze_vocabulary=not args.train_vocabulary, device="cpu",
    )  # fmt: skip
    t = time.time()
    report = distill(str(teacher), images, out, options, progress=True)
    return {
        "part": "agreement", "shape": args.shape, "teacher": str(teacher),
        "options": {k: v for k, v in vars(args).items() if k != "part"},
        "seconds": time.time() - t, **report.to_dict(),
    }  # fmt: skip


def speed(args: argparse.Namespace) -> dict:
    import cpu
    import torch

    from blipcap.distill import StudentShape, init_student, student_config, write_checkpoint
    from blipcap.model.config import BlipConfig
    from blipcap.model.weights import load_model

    teacher_dir = random_checkpoint("large", seed=3)
    raw = json.loads((teacher_dir / "config.json").read_text())
    config = BlipConfig.from_dict(raw)
    students = {}
    teacher = None
    for spec in args.students:
        v, t = (int(x) for x in spec.split("+"))
        out = WORK / f"large-student-v{v}-t{t}"
        if not (out / "model.safetensors").exists():
            teacher = teacher or load_model(teacher_dir, config, torch.float32, "cpu")
            shape = StudentShape(v, t)
            student_raw = student_config(raw, config, shape)
            student = init_student(teacher, BlipConfig.from_dict(student_raw), shape)
            write_checkpoint(student, student_raw, teacher_dir, out)
        students[f"student-v{v}-t{t}-int8"] = cpu.ensure_export(out, "int8")
    del teacher
    models = {"transformers": teacher_dir, "teacher-int8": cpu.ensure_export(teacher_dir, "int8")}
    models.update(students)
    args.shape = "large"
    rows = cpu.measure(list(models), models, "greedy", args.batch, args)
    base = {r["impl"]: r for r in rows}
    for row in rows:
        t = base["teacher-int8"]
        row["speed_vs_teacher_int8"] = t["all_seconds"] and statistics.median(
            a / b for a, b in zip(t["all_seconds"], row["all_seconds"], strict=True)
        )
    return {
        "part": "speed",
        "shape": "large",
        "tokens": args.tokens,
        "batch": args.batch,
        "rows": rows,
    }


def table(args: argparse.Namespace) -> dict:
    runs = []
    for path in args.runs:
        r = json.loads(Path(path).read_text())
        if r.get("part") != "agreement":
            continue
        o, h = r["options"], r["history"]
        runs.append({
            "file": Path(path).name, "shape": r["shape"], "student": r["student"],
            "train_images": r["train_images"], "val_images": r["val_images"],
            "lr": o["lr"], "kl_weight": o["kl_weight"], "augment": o.get("augment", "none"),
            "vocabulary": "trained" if o.get("train_vocabulary", True) else "frozen",
            "epochs": h[-1]["epoch"], "before": h[0], "first": h[1] if len(h) > 1 else h[0],
            "best": max(h[1:] or h, key=lambda e: e["token_agreement"]), "last": h[-1],
        })  # fmt: skip
    return {"part": "table", "runs": runs}


def _pct(e: dict) -> str:
    return f"{e['token_agreement']:.1%} / {e['exact_match']:.1%}"


def markdown(result: dict, info: dict) -> str:
    lines = [
        f"# distill: {result['part']}",
        "",
        f"machine: {info.get('cpu', '?')}, {info.get('cpus', '?')} CPUs",
        "",
    ]
    if result["part"] == "agreement":
        o = result["options"]
        lines += [
            f"teacher: random `{result['shape']}` shape; student {result['student']}; "
            f"{result['train_images']} training / {result['val_images']} held-back images; "
            f"{result['steps']} steps in {result['seconds']:.0f} s; parameters "
            f"{result['student_parameters'] / 1e6:.2f}M vs teacher {result['teacher_parameters'] / 1e6:.2f}M",
            "",
            f"settings: --lr {o['lr']}, --kl-weight {o['kl_weight']}, --augment {o['augment']}, "
            f"vocabulary {'trained' if o['train_vocabulary'] else 'frozen'}, "
            f"batch {o['batch_size']}, {o['max_new_tokens']}-token captions",
            "",
            "| epoch | step | exact caption match | token agreement |",
            "|---|---|---|---|",
        ]
        for h in result["history"]:
            lines.append(
                f"| {h['epoch']} | {h['step']} | {h['exact_match']:.1%} | {h['token_agreement']:.1%} |"
            )
    elif result["part"] == "table":
        lines += [
            "Held-back token agreement / exact caption match with the teacher.",
            "",
            "| run | images (train / held back) | vocabulary | --augment | --kl-weight | --lr "
            "| before | epoch 1 | best (epoch) | last (epoch) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in result["runs"]:
            lines.append(
                f"| {r['file']} | {r['train_images']} / {r['val_images']} | {r['vocabulary']} | "
                f"{r['augment']} | {r['kl_weight']} | {r['lr']} | {_pct(r['before'])} | "
                f"{_pct(r['first'])} | {_pct(r['best'])} ({r['best']['epoch']}) | "
                f"{_pct(r['last'])} ({r['last']['epoch']}) |"
            )
    else:
        lines += [
            f"BLIP-large shape, random weights, greedy, batch {result['batch']}, "
            f"{result['tokens']} generated tokens (forced)",
            "",
            "| implementation | images/s | vs transformers fp32 | vs teacher int8 | vision s/batch | peak RSS MiB |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            lines.append(
                f"| {r['impl']} | {r['images_per_second']:.2f} | {r['speed_ratio']:.2f}x | "
                f"{r['speed_vs_teacher_int8']:.2f}x | {r['vision_seconds_per_batch']:.2f} | "
                f"{r['peak_rss_mib']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="part", required=True)
    a = sub.add_parser("agreement")
    a.add_argument("--shape", default="small")
    a.add_argument("--seed", type=int, default=1)
    a.add_argument("--images", type=int, default=400)
    a.add_argument("--image-size", type=int, default=128)
    a.add_argument("--val-images", type=int, default=100)
    a.add_argument("--vision-layers", type=int, default=2)
    a.add_argument("--text-layers", type=int, default=2)
    a.add_argument("--epochs", type=int, default=6)
    a.add_argument("--batch-size", type=int, default=16)
    a.add_argument("--lr", type=float, default=5e-4)
    a.add_argument("--max-new-tokens", type=int, default=20)
    a.add_argument("--kl-weight", type=float, default=0.95)
    a.add_argument("--augment", choices=["mixup", "none"], default="mixup")
    a.add_argument("--train-vocabulary", action="store_true")
    a.add_argument(
        "--out",
        help="student directory (default: named after the settings, so a "
        "second run with the same settings resumes)",
    )
    s = sub.add_parser("speed")
    s.add_argument(
        "--students", nargs="+", default=["12+6", "8+4", "6+4"], help="vision+text layers"
    )
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--tokens", type=int, default=20)
    s.add_argument("--rounds", type=int, default=7)
    s.add_argument("--attempts", type=int, default=3)
    s.add_argument("--tolerance", type=float, default=0.5)
    s.add_argument("--max-wait", type=float, default=30)
    t = sub.add_parser("table")
    t.add_argument("runs", nargs="+", help="agreement results (JSON)")
    p.add_argument("--tag", default=socket.gethostname())
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    result = {"agreement": agreement, "speed": speed, "table": table}[args.part](args)
    info = machine()
    result.update(machine=info, date=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"distill-{args.part}-{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(result, info))
    print(markdown(result, info))


if __name__ == "__main__":
    main()
