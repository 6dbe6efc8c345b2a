"""A varied folder of unlabeled images for distillation demos and tests.

Photographs shipped with scikit-image (random crops, flips, colour shifts) and
synthetic images (gradients at random angles, shapes on flat or noisy ground,
checkerboards, stripes). Deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PHOTOS = (
    "astronaut", "camera", "chelsea", "coffee", "coins", "moon", "page", "text", "rocket",
    "immunohistochemistry", "hubble_deep_field", "horse", "brick", "grass", "gravel",
    "colorwheel", "logo", "clock", "cat", "cell", "checkerboard",
)  # fmt: skip


def _photos():
    from skimage import data

    out = []
    for name in PHOTOS:
        try:
            a = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - a photo this scikit-image cannot provide is skipped
            continue
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        if a.ndim == 2:
            a = np.stack([a] * 3, axis=-1)
        out.append(a[..., :3].astype(np.uint8))
    return out


def _crop(a: np.ndarray, rng, size: int) -> np.ndarray:
    from PIL import Image

    h, w = a.shape[:2]
    scale = rng.uniform(0.35, 1.0)
    ch, cw = max(8, int(h * scale)), max(8, int(w * scale * rng.uniform(0.8, 1.25)))
    cw = min(cw, w)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    a = a[y : y + ch, x : x + cw]
    if rng.random() < 0.5:
        a = a[:, ::-1]
    a = np.clip(a.astype(np.float32) * rng.uniform(0.7, 1.3, 3) + rng.uniform(-30, 30), 0, 255)
    return np.asarray(Image.fromarray(a.astype(np.uint8)).resize((size, size)))


def _synthetic(rng, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    kind = rng.integers(0, 4)
    y, x = np.mgrid[0:size, 0:size] / size
    if kind == 0:  # gradient at a random angle between two colours
        t = np.cos(rng.uniform(0, np.pi)) * x + np.sin(rng.uniform(0, np.pi)) * y
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        a = c0 + t[..., None] * (c1 - c0)
    elif kind == 1:  # checkerboard
        n = rng.integers(2, 12)
        board = ((x * n).astype(int) + (y * n).astype(int)) % 2
        a = np.where(board[..., None], rng.integers(0, 256, 3), rng.integers(0, 256, 3))
    elif kind == 2:  # stripes
        f = rng.uniform(2, 20)
        a = (np.sin(2 * np.pi * f * (x if rng.random() < 0.5 else y))[..., None] + 1) * 127.5
        a = a * rng.uniform(0.3, 1, 3)
    else:  # noise
        a = rng.integers(0, 256, (size, size, 3))
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.integers(0, 6)):  # shapes on top
        x0, y0 = rng.integers(0, size, 2)
        x1, y1 = x0 + rng.integers(4, size // 2 + 5), y0 + rng.integers(4, size // 2 + 5)
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    return np.asarray(im)


def make_images(folder: Path, n: int, size: int = 128, seed: int = 0) -> list[Path]:
    """Write ``n`` PNG images (about 60% photo crops, 40% synthetic) to ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = _photos()
    paths = []
    for i in range(n):
        if photos and rng.random() < 0.6:
            a = _crop(photos[rng.integers(0, len(photos))], rng, size)
        else:
            a = _synthetic(rng, size)
        path = folder / f"img{i:04d}.png"
        Image.fromarray(a).save(path)
        paths.append(path)
    return paths
