"""One description from a caption and the text in the image."""

from __future__ import annotations


def fuse_description(
    caption: str | None,
    text: str,
    *,
    subject: str = "An image with the text",
    max_text_chars: int | None = None,
) -> str:
    """One description from a caption and the text in the image.

    ``fuse_description("a letter on a desk", "Dear Ann")`` gives
    ``A letter on a desk that reads: "Dear Ann"``. Without a caption the
    ``subject`` leads (``An image with the text: "Dear Ann"``); without text the
    caption stands alone. ``max_text_chars`` shortens the quoted text at a word
    boundary, ending it with an ellipsis.
    """
    flat = " ".join(text.split())
    if max_text_chars is not None and len(flat) > max_text_chars:
        cut = flat[: max_text_chars + 1].rsplit(" ", 1)[0] if " " in flat[:max_text_chars] else ""
        flat = (cut or flat[:max_text_chars]).rstrip(" ,;:.") + "…"
    head = (caption or "").strip().rstrip(".").strip()
    head = head[:1].upper() + head[1:]
    if not flat:
        return f"{head}." if head else ""
    if head:
        return f'{head} that reads: "{flat}"'
    return f'{subject}: "{flat}"'
