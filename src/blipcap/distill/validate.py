"""How closely the student follows its teacher on held-back images.

* exact caption match: the share of images whose greedy (or beam) caption from the
  student is token for token the teacher's;
* token agreement: under teacher forcing on the teacher's caption, the share of
  positions where the student's most likely next token is the teacher's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..arrays import TorchOps
from ..decoding import SpecialTokens, generate
from ..options import CaptionOptions
from .data import Example, batches, load_pixels, sequences


class _Session:
    """A decoder session on the lean model's cached path (the torch backend's, without its options)."""

    def __init__(self, model, pixels: torch.Tensor, rows_per_image: int, max_len: int):
        self.model, self.rows_per_image = model, rows_per_image
        with torch.no_grad():
            self.cross = model.text_decoder.cross_kv(model.vision_model(pixels))
            rows = pixels.shape[0] * rows_per_image
            self.cache = model.text_decoder.new_cache(rows, max_len, pixels.device, pixels.dtype)

    def step(self, input_ids):
        with torch.no_grad():
            return self.model.text_decoder(
                input_ids, self.cache, self.cross, self.rows_per_image
            ).float()

    def reorder(self, rows) -> None:
        self.cache.reorder(rows)


class LeanBackend:
    """Just enough of a decoding backend to caption with a model being trained."""

    def __init__(self, model, device: str):
        self.model, self.device = model, device
        self.ops = TorchOps(device)

    def start(self, pixel_values: np.ndarray, rows_per_image: int, max_len: int) -> _Session:
        pixels = torch.from_numpy(np.ascontiguousarray(pixel_values)).to(self.device)
        return _Session(self.model, pixels, rows_per_image, max_len)


def agreement(
    student, teacher, examples: list[Example], folder: Path, load, options: CaptionOptions,
    special: SpecialTokens, bos: int, batch_size: int, device: str,
) -> dict:  # fmt: skip

    backend = LeanBackend(student, device)
    matches = agree = positions = images = 0
    for chunk in batches(examples, batch_size):
        pixels = load_pixels(folder, [e.path for e in chunk], load)
        keep = [i for i, p in enumerate(pixels) if not isinstance(p, str)]
        if not keep:
            continue
        chunk = [chunk[i] for i in keep]
        batch = np.stack([pixels[i] for i in keep])
        captions = generate(backend, batch, [bos], options, special)
        matches += sum(c[0] == list(e.tokens) for c, e in zip(captions, chunk, strict=True))
        images += len(chunk)
        inputs, _, mask = sequences(chunk, bos, special.eos, special.pad, device)
        pv = torch.from_numpy(batch).to(device)
        with torch.no_grad():
            s = student(pv, inputs).argmax(-1)
            t = teacher(pv.to(next(teacher.parameters()).dtype), inputs).argmax(-1)
        agree += int(((s == t) & mask).sum())
        positions += int(mask.sum())
    return {
        "exact_match": matches / max(1, images),
        "token_agreement": agree / max(1, positions),
        "images": images,
        "positions": positions,
    }
