"""Tokenizer and image preprocessing, identical to transformers' ``BlipProcessor``.

Needs only numpy, Pillow and tokenizers, so the ONNX backend runs without torch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ModelLoadError

# The OpenAI CLIP statistics BLIP was trained with (transformers' defaults).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ImagePreprocessor:
    """RGB PIL image -> normalized float32 CHW array, exactly as ``BlipImageProcessor`` (PIL path)."""

    def __init__(
        self,
        height: int = 384,
        width: int = 384,
        mean=CLIP_MEAN,
        std=CLIP_STD,
        rescale_factor: float = 1 / 255,
        resample: int = Image.Resampling.BICUBIC,
    ):
        self.size = (height, width)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.rescale_factor = rescale_factor
        self.resample = resample

    @classmethod
    def from_dir(cls, directory: Path, image_size: int) -> ImagePreprocessor:
        """Read preprocessor_config.json (published repos) or the nested processor_config.json."""
        raw: dict = {}
        flat, nested = directory / "preprocessor_config.json", directory / "processor_config.json"
        try:
            if flat.exists():
                raw = json.loads(flat.read_text())
            elif nested.exists():
                raw = json.loads(nested.read_text()).get("image_processor", {})
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"cannot read the preprocessing config in {directory}: {exc}"
            ) from exc
        size = raw.get("size") or {}
        if isinstance(size, int):
            size = {"height": size, "width": size}
        return cls(
            height=size.get("height", image_size),
            width=size.get("width", image_size),
            mean=raw.get("image_mean", CLIP_MEAN),
            std=raw.get("image_std", CLIP_STD),
            rescale_factor=raw.get("rescale_factor", 1 / 255),
            resample=raw.get("resample", Image.Resampling.BICUBIC),
        )

    def to_model_size(self, image: Image.Image) -> Image.Image:
        """``image`` in RGB at the model's input size: the first step of preprocessing.

        Preprocessing a result again gives the same pixels (resizing to its own
        size is a copy), so a service can shrink a decoded image at once and
        not hold its full size while it waits for the model.
        """
        if image.mode != "RGB":
            image = image.convert("RGB")
        h, w = self.size
        return image.resize((w, h), resample=self.resample)

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """``image`` at the model's size as (H, W, 3) uint8: what the copy to a device carries."""
        return np.asarray(self.to_model_size(image), dtype=np.uint8)

    # The one place of the normalization arithmetic, that of transformers: rescale in
    # float64, round to float32, then subtract and divide in float32. IEEE operations in
    # the same order give bit-identical values in numpy and in torch, on CPU and GPU.

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """(..., 3, H, W) uint8 -> normalized float32 (numpy)."""
        x = (pixels.astype(np.float64) * self.rescale_factor).astype(np.float32)
        return (x - self.mean) / self.std

    def normalize_tensor(self, torch, pixels):
        """(N, 3, H, W) uint8 torch tensor -> normalized float32 on its device (same arithmetic)."""
        mean = torch.as_tensor(self.mean, device=pixels.device)
        std = torch.as_tensor(self.std, device=pixels.device)
        x = (pixels.to(torch.float64) * self.rescale_factor).to(torch.float32)
        return (x - mean) / std

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.normalize(self.to_uint8(image).transpose(2, 0, 1))

    def batch(self, images: list[Image.Image]) -> np.ndarray:
        return np.stack([self(im) for im in images])


def synthetic_images(count: int, size: int, width: int | None = None, seed: int = 0) -> np.ndarray:
    """``count`` different normalized images (B, 3, size, width): gradients, stripes, noise.

    Deterministic, so an export's verification can be repeated exactly.
    """
    rng = np.random.default_rng(seed)
    width = width or size
    yy, xx = np.mgrid[0:size, 0:width].astype(np.float32)
    yy, xx = yy / max(1, size - 1), xx / max(1, width - 1)
    out = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            base = np.stack([xx, yy, 1 - xx])
        elif kind == 1:
            f = 2 + i
            base = np.stack([np.sin(f * np.pi * xx) ** 2, np.cos(f * np.pi * yy) ** 2, xx * yy])
        else:
            base = rng.random((3, size, width), dtype=np.float32)
        # roughly the range of CLIP-normalized pixels
        out.append((base - 0.45) / 0.27)
    return np.stack(out).astype(np.float32)


_CLEANUPS = [
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
    (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
]  # fmt: skip


def load_tokenizer_json(directory: Path):
    """``directory``/tokenizer.json as a ``tokenizers.Tokenizer``, without padding or truncation."""
    from tokenizers import Tokenizer as HFTokenizer

    path = directory / "tokenizer.json"
    if not path.exists():
        raise ModelLoadError(f"tokenizer.json is missing from {directory}")
    try:
        tok = HFTokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    # Some tokenizer.json files carry fixed padding/truncation for other tasks.
    tok.no_padding()
    tok.no_truncation()
    return tok


class Tokenizer:
    """BLIP's BERT WordPiece tokenizer via the ``tokenizers`` library."""

    def __init__(self, directory: Path, bos_token_id: int, sep_token_id: int, pad_token_id: int):
        self._tok = load_tokenizer_json(directory)
        self.bos_token_id = bos_token_id
        self.eos_token_id = sep_token_id  # BLIP ends captions with [SEP]
        self.pad_token_id = pad_token_id
        self.special_ids = {bos_token_id, sep_token_id, pad_token_id}
        for token in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]", "[DEC]", "[ENC]"):
            tid = self._tok.token_to_id(token)
            if tid is not None and token != "[UNK]":
                self.special_ids.add(tid)

    def prompt_ids(self, prompt: str | None) -> list[int]:
        """``[DEC]`` followed by the prompt's tokens - what BlipForConditionalGeneration feeds the decoder."""
        if not prompt:
            return [self.bos_token_id]
        return [self.bos_token_id, *self._tok.encode(prompt, add_special_tokens=False).ids]

    def decode(self, ids) -> str:
        """Token ids -> text, special tokens dropped, BERT's tokenization spaces cleaned up."""
        ids = [int(i) for i in ids if int(i) not in self.special_ids]
        text = self._tok.decode(ids, skip_special_tokens=True)
        for old, new in _CLEANUPS:
            text = text.replace(old, new)
        return re.sub(r"\s+", " ", text).strip()

    def decode_continuation(self, prefix_ids, ids) -> str:
        """The text that ``ids`` add after ``prefix_ids`` (a prompt), as a person reads it.

        WordPiece joins a continuation piece (``##acious``) to the word before
        it, so the generated ids cannot be decoded on their own: the whole
        sequence is decoded and the decoded prompt removed from its start,
        which is what decoding transformers' full output and dropping the
        prompt gives (``"a picture of" + "##acious"`` -> ``"acious"``, not
        ``"##acious"``).
        """
        prefix = self.decode(prefix_ids)
        full = self.decode([*prefix_ids, *ids])
        if prefix and full.startswith(prefix):
            return full[len(prefix) :].strip()
        return self.decode(ids)  # the clean-up changed the prompt's own text: keep the ids' text
