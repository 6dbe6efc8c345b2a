"""OCR cost in ``blipcap index``: time per image and words found, full detection vs ``--ocr auto``.

    python benchmarks/index_ocr.py                  # writes benchmarks/results/index-ocr.json
    python benchmarks/index_ocr.py --repeat 3

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
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "index-ocr.json"
    )
    args = parser.parse_args()

    library = [(name, "photo", img, "") for name, img in photos()]
    library += [(name, "screenshot", img, ref) for name, img, ref in screenshots()]
    library += [(name, "sign", img, ref) for name, img, ref in signs(photos())]
    modes = {"full (old auto, --ocr rapidocr)": DETECT_PX, "auto": PHOTO_DETECT_PX}
    ocr_image(library[0][2])  # load the models outside the timings

    rows = []
    for name, kind, img, ref in library:
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
