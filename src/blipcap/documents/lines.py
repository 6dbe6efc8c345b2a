"""What every OCR engine returns: lines of text with boxes, and the text of one image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OcrLine:
    """One line of text. ``box`` is (left, top, right, bottom) in image pixels."""

    text: str
    box: tuple[int, int, int, int]
    confidence: float

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


@dataclass(frozen=True)
class OcrResult:
    """The text of one image: lines in reading order, and their joined text.

    ``text`` has one line per text row, and a blank line between paragraphs
    and between columns.
    """

    text: str
    lines: list[OcrLine] = field(default_factory=list)
    engine: str = "rapidocr"
    width: int = 0
    height: int = 0
    rotation: int = 0
    """0, or 180 for a page read upside down: the boxes then refer to the image turned 180°."""

    @property
    def has_text(self) -> bool:
        return bool(self.text.strip())

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "engine": self.engine,
            "width": self.width,
            "height": self.height,
            "rotation": self.rotation,
            "lines": [
                {"text": ln.text, "box": list(ln.box), "confidence": round(ln.confidence, 4)}
                for ln in self.lines
            ],
        }
