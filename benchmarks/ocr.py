"""OCR accuracy: character error rate (CER) against ground truth, per engine.

    python benchmarks/ocr.py                  # RapidOCR and Tesseract (when installed)
    python benchmarks/ocr.py --pages 2 --engines rapidocr

Two kinds of pages (``--dpi`` renders them at other resolutions too):
- the scanned book page scikit-image ships (``skimage.data.page()``, 384x191,
  uneven lighting), transcribed by hand below;
- pages rendered from known text at 300 DPI (11 pt DejaVu Sans / Serif) and
  degraded like a scan: "clean" (as rendered), "scan" (rotated 1 degree,
  blurred, sensor noise, JPEG quality 60), "poor scan" (rotated 2 degrees,
  scanned at 150 DPI, more blur and noise, JPEG quality 40).

CER = Levenshtein distance between the whitespace-normalized texts divided by
the reference length. Lower is better; 0.01 is one wrong character in a hundred.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from blipcap.documents import get_ocr_engine, ocr_image

SKIMAGE_PAGE = """Region-based segmentation
Let us first determine markers of the coins and the
background. These markers are pixels that we can label
unambiguously as either object or background. Here,
the markers are found at the two extreme parts of the
histogram of grey values:
>>> markers = np.zeros_like(coins)"""

# Plain prose with numbers, punctuation and a few long words: ordinary office text.
PARAGRAPHS = [
    "Dear Ms. Okafor, thank you for your letter of 14 March 2024. We have reviewed the invoice "
    "(No. 4521-B) and confirm that the outstanding balance of EUR 1,318.40 was received on 2 April.",
    "The committee meets every second Tuesday at 10:30 in room 3.12. Please bring the signed "
    "consent forms, a copy of your identification, and any questions about the new schedule.",
    "Water boils at 100 degrees Celsius at sea level; at an altitude of 2,400 metres it boils "
    "at roughly 92 degrees, which is why pasta takes longer to cook in the mountains.",
    "Shipping address: 27 Harbour Road, Apartment 5C, Portsmouth PO1 3AX, United Kingdom. "
    "Telephone +44 23 9284 1170. Reference: order 88-0142, two parcels, fragile.",
]
FONTS = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
]


def cer(reference: str, hypothesis: str) -> float:
    ref, hyp = " ".join(reference.split()), " ".join(hypothesis.split())
    prev = list(range(len(hyp) + 1))
    for i, rc in enumerate(ref, 1):
        cur = [i]
        for j, hc in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rc != hc)))
        prev = cur
    return prev[-1] / max(len(ref), 1)


def wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if font.getlength(trial) <= width:
            current = trial
        else:
            lines.append(current)
            current = word
    return lines + [current]


def render_page(paragraphs: list[str], font_path: str, dpi: int = 300) -> tuple[Image.Image, str]:
    """A 8.27-inch wide page section (A4 width) with 1-inch margins, 11 pt text."""
    size = round(11 * dpi / 72)
    font = ImageFont.truetype(font_path, size)
    width, margin = round(8.27 * dpi), dpi
    lines: list[str] = []
    for p in paragraphs:
        lines += wrap(p, font, width - 2 * margin) + [""]
    step = round(size * 1.45)
    page = Image.new("L", (width, 2 * margin + step * len(lines)), 255)
    draw = ImageDraw.Draw(page)
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * step), line, font=font, fill=0)
    return page.convert("RGB"), "\n".join(lines)


def degrade(page: Image.Image, level: str, seed: int) -> Image.Image:
    if level == "clean":
        return page
    rng = np.random.default_rng(seed)
    angle, blur, noise, quality, scale = (
        (1.0, 0.8, 8, 60, 1.0) if level == "scan" else (2.0, 1.0, 14, 40, 0.5)
    )
    img = page.rotate(
        angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255)
    )
    if scale != 1.0:
        img = img.resize(
            (round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS
        )
    img = img.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(img, dtype=np.float32)
    # Paper is never pure white: a slight gradient, plus sensor noise.
    gradient = np.linspace(0, 25, img.width, dtype=np.float32)[None, :, None]
    pixels = np.clip(pixels - gradient + rng.normal(0, noise, pixels.shape), 0, 255).astype(
        np.uint8
    )
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=4, help="rendered pages per condition")
    parser.add_argument("--engines", default="rapidocr,tesseract")
    parser.add_argument(
        "--dpi",
        default="300",
        help="comma-separated resolutions to render the pages at (e.g. 150,200,300); "
        "the poor scan is always rendered at 300 DPI and scanned at half of it",
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    engines = [e for e in args.engines.split(",") if e != "tesseract" or shutil.which("tesseract")]
    result: dict = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "cer": {},
    }
    import skimage.data

    skimage_page = Image.fromarray(skimage.data.page()).convert("RGB")
    dpis = [int(d) for d in args.dpi.split(",")]
    conditions = [(dpi, level) for dpi in dpis for level in ("clean", "scan")]
    conditions.append((300, "poor scan"))
    pages = {
        dpi: [
            render_page(
                [PARAGRAPHS[(i + k) % len(PARAGRAPHS)] for k in range(2)],
                FONTS[i % len(FONTS)],
                dpi=dpi,
            )
            for i in range(args.pages)
        ]
        for dpi in {*dpis, 300}
    }
    for engine in engines:
        ocr_image(
            Image.new("RGB", (64, 64), "white"), engine
        )  # load the models outside the timings
        rows = {}
        t = time.perf_counter()
        rows["skimage_page"] = {
            "cer": round(cer(SKIMAGE_PAGE, ocr_image(skimage_page, engine).text), 4)
        }
        rows["skimage_page"]["seconds"] = round(time.perf_counter() - t, 2)
        for dpi, level in conditions:
            errors, seconds = [], []
            for i, (page, truth) in enumerate(pages[dpi]):
                image = degrade(page, level, seed=i)
                t = time.perf_counter()
                text = ocr_image(image, engine).text
                seconds.append(time.perf_counter() - t)
                errors.append(cer(truth, text))
            name = level if dpis == [300] or level == "poor scan" else f"{dpi} dpi {level}"
            rows[name] = {
                "pages": len(pages[dpi]),
                "cer_mean": round(float(np.mean(errors)), 4),
                "cer_max": round(float(np.max(errors)), 4),
                "seconds_per_page": round(float(np.mean(seconds)), 2),
                "page_px": f"{image.width}x{image.height}",
            }
        rows["models"] = getattr(get_ocr_engine(engine), "models", None)
        result["cer"][engine] = rows
        print(json.dumps({engine: rows}), file=sys.stderr)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
