"""Check an ONNX export against the torch backend.

fp32: greedy and beam-search tokens must be identical. int8: tokens may
differ, so the report also carries an accuracy proxy measured along the fp32
greedy path (teacher forcing): the cosine similarity of each next-token
logit vector to fp32's, and how often the top-1 token agrees.

Backend-neutral (works over :class:`blipcap.decoding.DecodingBackend`); the
images are deterministic synthetic pictures unless the caller passes its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..decoding import SpecialTokens, generate
from ..model.processing import synthetic_images
from ..options import CaptionOptions


@dataclass
class DecodeCheck:
    options: dict[str, Any]
    identical: int
    total: int
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.identical == self.total


@dataclass
class LogitAgreement:
    """Teacher-forced comparison of next-token logits along the reference's greedy path."""

    positions: int
    cosine_mean: float
    cosine_min: float
    top1_agreement: float
    max_abs_diff: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_decoding(
    reference, candidate, pixels: np.ndarray, prompt_ids: list[int], options: CaptionOptions,
    special: SpecialTokens,
) -> DecodeCheck:  # fmt: skip
    """Decode the same images with both backends; count images whose tokens are identical."""
    ref = generate(reference, pixels, prompt_ids, options, special)
    cand = generate(candidate, pixels, prompt_ids, options, special)
    mismatches = [
        {"image": i, "reference": r, "candidate": c}
        for i, (r, c) in enumerate(zip(ref, cand, strict=True))
        if r != c
    ]
    opts = {"num_beams": options.num_beams, "max_new_tokens": options.max_new_tokens}
    return DecodeCheck(opts, len(ref) - len(mismatches), len(ref), mismatches)


def teacher_forced_logits(
    backend, pixels: np.ndarray, prompt_ids: list[int], paths: list[list[int]]
):
    """Logits (images, len(path)+1, vocab) for feeding each image's token path after the prompt."""
    steps = max(len(p) for p in paths)
    padded = np.array([p + [0] * (steps - len(p)) for p in paths], dtype=np.int64)
    ops = backend.ops
    session = backend.start(pixels, 1, len(prompt_ids) + steps + 1)
    prompt = np.tile(np.asarray(prompt_ids, dtype=np.int64)[None], (pixels.shape[0], 1))
    out = [ops.to_numpy(session.step(ops.tensor(prompt)))]
    for t in range(steps):
        out.append(ops.to_numpy(session.step(ops.tensor(padded[:, t : t + 1]))))
    return np.stack(out, axis=1).astype(np.float32)


def logit_agreement(
    reference, candidate, pixels: np.ndarray, prompt_ids: list[int], max_new_tokens: int,
    special: SpecialTokens,
) -> LogitAgreement:  # fmt: skip
    """Cosine similarity and top-1 agreement of ``candidate``'s logits to ``reference``'s.

    The path is the reference's own greedy path with ``max_new_tokens`` forced
    (no early end), so every image contributes the same number of positions.
    """
    opts = CaptionOptions(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)
    paths = [c[0] for c in generate(reference, pixels, prompt_ids, opts, special)]
    # A forced path can still hold fewer tokens if eos was the only option; pad with pad ids.
    paths = [p + [special.pad] * (max_new_tokens - len(p)) for p in paths]
    ref = teacher_forced_logits(reference, pixels, prompt_ids, [p[:-1] for p in paths])
    cand = teacher_forced_logits(candidate, pixels, prompt_ids, [p[:-1] for p in paths])
    ref2, cand2 = ref.reshape(-1, ref.shape[-1]), cand.reshape(-1, cand.shape[-1])
    ref64, cand64 = ref2.astype(np.float64), cand2.astype(np.float64)
    cos = (ref64 * cand64).sum(-1) / (
        np.linalg.norm(ref64, axis=-1) * np.linalg.norm(cand64, axis=-1)
    )
    top1 = float((ref2.argmax(-1) == cand2.argmax(-1)).mean())
    return LogitAgreement(
        positions=int(ref2.shape[0]),
        cosine_mean=float(cos.mean()),
        cosine_min=float(cos.min()),
        top1_agreement=top1,
        max_abs_diff=float(np.abs(ref2 - cand2).max()),
    )


@dataclass
class DecodingVerification:
    """Greedy and beam decoding of synthetic images compared between two backends."""

    pixels: np.ndarray
    prompt: list[int]
    special: SpecialTokens
    checks: list[DecodeCheck]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        decoding = [
            {
                "options": c.options,
                "identical": c.identical,
                "total": c.total,
                "mismatches": c.mismatches,
            }
            for c in self.checks
        ]
        return {"images": int(self.pixels.shape[0]), "decoding": decoding}


def verify_decoding(reference, candidate, config: Any, images: int) -> DecodingVerification:
    """Decode ``images`` synthetic images (greedy, then beam 3; 20 new tokens) with both backends."""
    t = config.text
    special = SpecialTokens(eos=t.sep_token_id, pad=t.pad_token_id)
    pixels = synthetic_images(max(1, images), config.vision.image_size)
    prompt = [t.bos_token_id]
    checks = [
        compare_decoding(reference, candidate, pixels, prompt, opts, special)
        for opts in (
            CaptionOptions(max_new_tokens=20),
            CaptionOptions(num_beams=3, max_new_tokens=20),
        )
    ]
    return DecodingVerification(pixels, prompt, special, checks)
