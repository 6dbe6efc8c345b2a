"""Tesseract: the ``tesseract`` program (Debian ``tesseract-ocr``), read through its TSV output."""

from __future__ import annotations

import io
import os
import shutil
import subprocess

from PIL import Image

from ..errors import BlipcapError, InputError
from .lines import OcrLine


class TesseractEngine:
    """The ``tesseract`` program (5.x), read through its TSV output."""

    name = "tesseract"
    models = "Tesseract LSTM (the installed traineddata)"

    def __init__(self, lang: str = "eng", timeout: float = 300.0) -> None:
        binary = shutil.which("tesseract")
        if binary is None:
            raise BlipcapError(
                "the 'tesseract' program is not installed. Install it with: "
                "apt-get install tesseract-ocr (or use the default engine, rapidocr)"
            )
        self.binary = binary
        self.lang = lang
        self.timeout = timeout

    def recognize(self, image: Image.Image) -> tuple[list[OcrLine], int]:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        # --psm 3: automatic page layout. Sauvola binarization (thresholding_method=2)
        # copes with the uneven lighting of scans and photos, where global Otsu
        # loses whole shaded margins.
        cmd = [self.binary, "stdin", "stdout", "-l", self.lang, "--psm", "3"]
        cmd += ["-c", "thresholding_method=2", "tsv"]
        env = dict(os.environ, OMP_THREAD_LIMIT=os.environ.get("OMP_THREAD_LIMIT", "1"))
        try:
            proc = subprocess.run(
                cmd, input=buf.getvalue(), capture_output=True, timeout=self.timeout, env=env
            )
        except subprocess.TimeoutExpired:
            raise InputError(
                f"tesseract took longer than {self.timeout:.0f} s on one page"
            ) from None
        if proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace").strip().splitlines()
            raise BlipcapError(
                f"tesseract failed: {detail[-1] if detail else proc.returncode}. "
                f"Is the language pack installed? (apt-get install tesseract-ocr-{self.lang})"
            )
        return parse_tesseract_tsv(proc.stdout.decode("utf-8", errors="replace")), 0


def parse_tesseract_tsv(tsv: str) -> list[OcrLine]:
    """Group Tesseract's word rows into lines, keeping its reading order."""
    groups: dict[tuple[str, ...], list[tuple[str, int, int, int, int, float]]] = {}
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5" or not cols[11].strip():
            continue
        left, top, width, height = (int(c) for c in cols[6:10])
        conf = float(cols[10])
        key = tuple(cols[1:5])  # page, block, paragraph, line
        groups.setdefault(key, []).append((cols[11], left, top, left + width, top + height, conf))
    lines = []
    for words in groups.values():
        box = (
            min(w[1] for w in words),
            min(w[2] for w in words),
            max(w[3] for w in words),
            max(w[4] for w in words),
        )
        confidence = sum(max(w[5], 0.0) for w in words) / len(words) / 100.0
        lines.append(OcrLine(" ".join(w[0] for w in words), box, confidence))
    return lines
