"""RapidOCR: PP-OCRv6 detection and recognition through ONNX Runtime (the default engine).

The ``rapidocr`` wheel ships the PP-OCRv6 *small* detector and recognizer and the
PP-OCR v2 angle classifier, so nothing is downloaded. On the character-error-rate
set of docs/documents.md they read every clean page without an error where the
PP-OCRv4 models of the older ``rapidocr-onnxruntime`` wheel ran words together
("Invoicenumber4521"); figures in benchmarks/results/ocr-models.md.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from PIL import Image

from .._optional import require
from .lines import OcrLine

DETECT_PX = 2000
"""RapidOCR's text detector sees the image scaled to at most this many pixels (its default)."""
PHOTO_DETECT_PX = 960
"""Detection size for photo libraries (``blipcap index --ocr auto``): the detector sees a
quarter to a third of the pixels it sees at ``DETECT_PX``; lines found are still read from the full-resolution image.
Measured in benchmarks/index_ocr.py."""


class RapidOcrEngine:
    """PP-OCRv6 detection + recognition through ONNX Runtime (models ship in the wheel).

    Detection runs on the page scaled to at most ``detect_px`` (2000 px, RapidOCR's
    default, unless the caller asks for less: a photo library uses ``PHOTO_DETECT_PX``);
    each detected line is then cut from the *full-resolution* image and
    enlarged so that it is at least 48 px high - the recognizer's input height.
    A line the angle classifier calls upside down is read both ways.
    Left to RapidOCR, lines are cut from the scaled page and stretched up with
    bilinear interpolation, which blurs the gaps between words away
    ("Invoicenumber4521").
    """

    name = "rapidocr"
    models = "PP-OCRv6 small (det, rec) + PP-OCR v2 angle classifier"
    _REC_PX = 48
    _MAX_FACTOR = 4

    def __init__(self) -> None:
        require("rapidocr", "ocr", "reading text in images (OCR)")
        import numpy as np
        from rapidocr import RapidOCR

        # "slow" scores each detected polygon instead of its bounding box: a slanted
        # line squeezed between its neighbours keeps its score and is not dropped.
        # The detector sees the image at most DETECT_PX on its longest side and is never
        # enlarged: rapidocr's default (shortest side at least 736 px) blows a 640x160
        # sign up 4.6 times, and PP-OCRv6 then cuts its one line in two overlapping boxes.
        self._ocr = RapidOCR(
            params={
                "Global.log_level": "error",
                "Det.score_mode": "slow",
                "Det.limit_type": "max",
                "Det.limit_side_len": DETECT_PX,
            }
        )
        # The classifier and recognizer load on first use; one call on a blank line loads
        # them, so that they are there to be called one by one below.
        self._ocr(np.full((48, 192, 3), 255, np.uint8), use_det=False, use_cls=True, use_rec=True)
        self._lock = threading.Lock()  # the engine keeps per-call state: one call at a time

    def recognize(
        self, image: Image.Image, detect_px: int = DETECT_PX
    ) -> tuple[list[OcrLine], int]:
        """Lines (boxes in the image's pixels) and the rotation they refer to: 180 when most
        lines read better turned round - an upside-down page, read again turned upright."""
        lines, turned = self._read(image, detect_px)
        if len(lines) >= 2 and turned > len(lines) / 2:
            upright, turned_again = self._read(image.rotate(180), detect_px)
            if turned_again < len(upright) / 2:
                return upright, 180
        return lines, 0

    def _read(self, image: Image.Image, detect_px: int) -> tuple[list[OcrLine], int]:
        import numpy as np

        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        turned_count = 0
        with self._lock:
            quads = self._detect(bgr, detect_px)
            if not quads:
                return [], 0
            crops = [self._crop(bgr, q) for q in quads]
            texts = self._recognize_lines(crops)
            # The angle classifier squeezes a line into 192 px, so long lines are often
            # called upside down when they are not: read a line both ways when it says so,
            # and keep the reading the recognizer is surer of.
            classified = self._ocr.text_cls(crops)
            turned, verdicts = classified.img_list, classified.cls_res
            flagged = [i for i, (label, _) in enumerate(verdicts) if label == "180"]
            if flagged:
                again = self._recognize_lines([turned[i] for i in flagged])
                for i, reading in zip(flagged, again, strict=True):
                    if reading[1] > texts[i][1]:
                        texts[i] = reading
                        turned_count += 1
        lines = []
        for quad, (text, score) in zip(quads, texts, strict=True):
            box = (
                int(round(float(quad[:, 0].min()))),
                int(round(float(quad[:, 1].min()))),
                int(round(float(quad[:, 0].max()))),
                int(round(float(quad[:, 1].max()))),
            )
            if text.strip():
                lines.append(OcrLine(" ".join(text.split()), box, float(score)))
        return lines, turned_count

    def _detect(self, bgr: Any, detect_px: int) -> list[Any]:
        """Text-line quadrilaterals in ``bgr``'s pixels, found on a copy scaled to at most
        ``detect_px`` on its longest side (detection is most of the cost on a photo)."""
        import cv2
        import numpy as np

        scale = min(1.0, detect_px / max(bgr.shape[:2]))
        if detect_px >= DETECT_PX:  # RapidOCR scales the page to DETECT_PX itself, as it always has
            scale = 1.0
        if scale < 1.0:
            size = (max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        boxes = self._ocr(bgr, use_det=True, use_cls=False, use_rec=False).boxes
        if boxes is None:
            return []
        return [np.asarray(b, dtype=np.float32).reshape(4, 2) / scale for b in boxes]

    def _recognize_lines(self, crops: list[Any]) -> list[tuple[str, float]]:
        from rapidocr.ch_ppocr_rec import TextRecInput

        read = self._ocr.text_rec(TextRecInput(img=crops))
        return [(text, float(score)) for text, score in zip(read.txts, read.scores, strict=True)]

    def _crop(self, bgr: Any, quad: Any) -> Any:
        import cv2
        import numpy as np

        width = max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3]))
        height = max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2]))
        factor = min(self._MAX_FACTOR, max(1, math.ceil(self._REC_PX / max(height, 1.0))))
        out_w, out_h = max(1, int(width * factor)), max(1, int(height * factor))
        target = np.array([[0, 0], [out_w, 0], [out_w, out_h], [0, out_h]], dtype=np.float32)
        matrix = cv2.getPerspectiveTransform(quad, target)
        crop = cv2.warpPerspective(
            bgr, matrix, (out_w, out_h), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
        )
        if out_h / out_w >= 1.5:  # a vertical line of text: read it lying down
            crop = np.rot90(crop)
        return crop
