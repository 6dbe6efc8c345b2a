"""OCR cost in ``blipcap index``: time per image and words found, full detection vs ``--ocr auto``.

    python benchmarks/index_ocr.py                  # writes benchmarks/results/index-ocr.json
    python benchmarks/index_ocr.py --repeat 3
    python benchmarks/index_ocr.py --end-to-end --repeat 2   # `blipcap index` on 25 images

A mixed library of 1600x1200 images:
- photos without text: scikit-image's photos (astronaut, coffee, cat, rocket,
  camera), scaled up, and generated ones (smooth gradients with blobs, noise);
- images with text rendered in DejaVu Sans: "screenshots" (lines of 12-22 px
  text on a flat background) and "signs" (40-70 px words on a photo).

Each image goes through ``ocr_image`` twice per repeat: with RapidOCR's full
detection size (``DETECT_PX``, what ``--ocr auto`` did before and ``--ocr
rapidocr`` still does) and with ``PHOTO_DETECT_PX`` (``--ocr auto`` now).
Word recall = share of the rendered words found (case-insensitive, punctuation
stripped) in the OCR text.

``--end-to-end`` times the whole ``blipcap index`` command instead, as a user
runs it, on a folder of 25 JPEGs (the 13 images above and 12 mirrored or
rotated copies of the photos: 19 photos, 6 with text) with ``--ocr none``,
``auto`` and ``rapidocr``, each into a new database, the modes in a rotating
order within each round. The caption model is a random tiny checkpoint unless
``--model`` names another, so the differences between modes are OCR's cost.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402

from blipcap.documents import DETECT_PX, PHOTO_DETECT_PX, ocr_image  # noqa: E402

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
SIZE = (1600, 1200)
SCREEN_LINES = [
    "Settings  Display  Sound  Notifications  Battery",
    "Invoice 4521-B due 14 March 2024 total EUR 1,318.40",
    "Your download is complete: report_final_v3.pdf (2.4 MB)",
    "Meeting moved to Tuesday 10:30 in room 3.12, bring the consent forms",
    "Error: could not connect to server at db.internal port 5432",
]
SIGNS = [
    ["PLATFORM 9", "EXIT ONLY"],
    ["FRESH BREAD", "OPEN DAILY"],
    ["NO PARKING", "TOW AWAY ZONE"],
]


def photos() -> list[tuple[str, Image.Image]]:
    from skimage import data

    found = [
        (name, Image.fromarray(getattr(data, name)()).convert("RGB").resize(SIZE))
        for name in ("astronaut", "coffee", "chelsea", "rocket", "camera")
    ]
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0 : SIZE[1], 0 : SIZE[0]] / max(SIZE)
    for i in range(2):
        img = np.stack([x * 255, y * 200, (1 - x) * 180], axis=-1)
        for cx, cy, r in rng.uniform(0, 1, (6, 3)):
            img[(x - cx) ** 2 + (y - cy * 0.75) ** 2 < (r * 0.2) ** 2] = rng.integers(0, 255, 3)
        img += rng.normal(0, 8, img.shape)
        pil = Image.fromarray(img.clip(0, 255).astype(np.uint8)).filter(ImageFilter.BLUR)
        found.append((f"generated-{i}", pil))
    return found


def screenshots() -> list[tuple[str, Image.Image, str]]:
    found = []
    for i, (px, bg, fg) in enumerate(
        [(12, "white", "black"), (18, "white", "black"), (22, "#202124", "#e8eaed")]
    ):
        img = Image.new("RGB", SIZE, bg)
        draw = ImageDraw.Draw(img)
        font = ImageFont.truetype(FONT, px)
        for row, line in enumerate(SCREEN_LINES):
            draw.text((60 + 150 * i, 80 + row * px * 5), line, font=font, fill=fg)
        found.append((f"screenshot-{px}px", img, " ".join(SCREEN_LINES)))
    return found


def signs(backgrounds: list[tuple[str, Image.Image]]) -> list[tuple[str, Image.Image, str]]:
    found = []
    for (name, photo), words, px in zip(backgrounds, SIGNS, (40, 55, 70), strict=False):
        img = photo.copy()
        draw = ImageDraw.Draw(img)
        font = ImageFont.truetype(FONT, px)
        for row, line in enumerate(words):
            xy = (300, 300 + row * px * 2)
            box = draw.textbbox(xy, line, font=font)
            draw.rectangle((box[0] - 20, box[1] - 20, box[2] + 20, box[3] + 20), fill="#1a4d8f")
            draw.text(xy, line, font=font, fill="white")
        found.append((f"sign-{px}px-on-{name}", img, " ".join(words)))
    return found


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def recall(reference: str, found: str) -> float:
    wanted, got = words(reference), set(words(found))
    return sum(w in got for w in wanted) / len(wanted)


def library() -> list[tuple[str, str, Image.Image, str]]:
    found = [(name, "photo", img, "") for name, img in photos()]
    found += [(name, "screenshot", img, ref) for name, img, ref in screenshots()]
    found += [(name, "sign", img, ref) for name, img, ref in signs(photos())]
    return found


IMAGES_END_TO_END = 25


def end_to_end(repeat: int, model: str | None, out: Path) -> None:
    """Wall time of ``blipcap index`` on 25 JPEGs with each ``--ocr`` mode."""
    with tempfile.TemporaryDirectory(prefix="index-e2e-") as tmp:
        seconds = _time_index_modes(Path(tmp), repeat, model)
    result = {
        "machine": machine(),
        "images": IMAGES_END_TO_END,
        "model": model or "random tiny checkpoint",
        "repeat": repeat,
        "seconds": seconds,
        "median_seconds": {m: statistics.median(s) for m, s in seconds.items()},
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median_seconds"], indent=2))


def _time_index_modes(work: Path, repeat: int, model: str | None) -> dict[str, list[float]]:
    """Write the 25 JPEGs under ``work`` and time each ``--ocr`` mode ``repeat`` times."""
    blipcap = Path(sys.executable).with_name("blipcap")
    folder = work / "photos"
    folder.mkdir()
    images = library()
    copies = [
        (f"{n}-mirrored", img.transpose(Image.FLIP_LEFT_RIGHT)) for n, _, img, _ in images[:7]
    ]
    copies += [(f"{n}-rotated", img.transpose(Image.ROTATE_180)) for n, _, img, _ in images[:5]]
    for name, img in [(n, img) for n, _, img, _ in images] + copies:
        img.save(folder / f"{name}.jpg", quality=90)
    if model is None:
        from blipcap.testing import make_random_checkpoint

        model = str(work / "tiny")
        make_random_checkpoint(model, "tiny")
    modes = ["none", "auto", "rapidocr"]
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    for round_ in range(repeat):
        for mode in modes[round_ % 3 :] + modes[: round_ % 3]:
            db = work / f"{mode}-{round_}.db"
            cmd = [str(blipcap), "index", str(folder), "--db", str(db), "--ocr", mode]
            start = time.perf_counter()
            p = subprocess.run([*cmd, "--json", "--model", model], capture_output=True, text=True)
            seconds[mode].append(round(time.perf_counter() - start, 2))
            if p.returncode != 0:
                sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
            summary = json.loads(p.stdout.splitlines()[-1])
            print(mode, seconds[mode][-1], "s", summary, file=sys.stderr)
    assert len(list(folder.iterdir())) == IMAGES_END_TO_END
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--end-to-end", action="store_true", help="time `blipcap index` itself")
    parser.add_argument("--model", help="caption model for --end-to-end (default: random tiny)")
    parser.add_argument("--out", type=Path, help="results file (JSON)")
    args = parser.parse_args()
    results = Path(__file__).parent / "results"
    if args.end_to_end:
        end_to_end(args.repeat, args.model, args.out or results / "index-e2e.json")
        return
    args.out = args.out or results / "index-ocr.json"

    images = library()
    modes = {"full (old auto, --ocr rapidocr)": DETECT_PX, "auto": PHOTO_DETECT_PX}
    ocr_image(images[0][2])  # load the models outside the timings

    rows = []
    for name, kind, img, ref in images:
        row = {"image": name, "kind": kind}
        for mode, px in modes.items():
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                result = ocr_image(img, detect_px=px)
                times.append(time.perf_counter() - start)
            row[mode] = {
                "seconds": round(statistics.median(times), 3),
                "lines": len(result.lines),
                "word_recall": round(recall(ref, result.text), 3) if ref else None,
            }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    summary = {}
    for kind in ("photo", "screenshot", "sign"):
        of_kind = [r for r in rows if r["kind"] == kind]
        summary[kind] = {
            mode: {
                "mean_seconds": round(statistics.mean(r[mode]["seconds"] for r in of_kind), 3),
                "word_recall": (
                    round(statistics.mean(r[mode]["word_recall"] for r in of_kind), 3)
                    if kind != "photo"
                    else None
                ),
            }
            for mode in modes
        }
    result = {"machine": machine(), "repeat": args.repeat, "summary": summary, "images": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
