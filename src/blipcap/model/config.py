"""BLIP dimensions, read from a checkpoint's ``config.json``.

Only the fields the captioning model uses are read; missing ones take the
defaults of transformers' ``BlipVisionConfig`` / ``BlipTextConfig`` (the
published configs rely on some of them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import ModelLoadError

SUPPORTED_ACTIVATIONS = ("gelu",)


@dataclass(frozen=True)
class VisionConfig:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 384
    patch_size: int = 16
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def seq_len(self) -> int:
        return self.num_patches + 1  # + the class token


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 30524
    hidden_size: int = 768
    encoder_hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    bos_token_id: int = 30522
    sep_token_id: int = 102
    pad_token_id: int = 0


@dataclass(frozen=True)
class BlipConfig:
    vision: VisionConfig
    text: TextConfig
    random_weights: bool = False
    """True for blipcap's random test checkpoints: results are marked, never shown as real."""

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], source: str | os.PathLike[str] = "config.json"
    ) -> BlipConfig:
        """Read and check a parsed ``config.json``; ``source`` names the file in error messages.

        Raises :class:`ModelLoadError` naming the file and the field for any
        dimension the model cannot be built with (zero heads, a hidden size not
        divisible by the heads, special token ids outside the vocabulary, ...).
        """
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        if raw.get("model_type") not in (None, "blip"):
            raise ModelLoadError(
                f"{source} has model_type {raw.get('model_type')!r}; blipcap runs BLIP "
                "captioning checkpoints (model_type 'blip'), e.g. "
                "Salesforce/blip-image-captioning-large"
            )
        sections = {name: raw.get(name) or {} for name in ("vision_config", "text_config")}
        for name, section in sections.items():
            if not isinstance(section, dict):
                raise _invalid(source, name, section, "a JSON object")
        vision = _pick(VisionConfig, sections["vision_config"])
        text = _pick(TextConfig, sections["text_config"])
        if "encoder_hidden_size" not in sections["text_config"]:
            text = replace(text, encoder_hidden_size=vision.hidden_size)
        _check_section(source, "vision_config", vision)
        _check_section(source, "text_config", text)
        _check_vision(source, vision)
        _check_text(source, text, vision)
        return cls(vision=vision, text=text, random_weights=bool(raw.get("blipcap_random_weights")))


# -- validation ---------------------------------------------------------------------------------


def _invalid(source, field: str, value: Any, expected: str) -> ModelLoadError:
    return ModelLoadError(
        f"{source}: {field} is {value!r}, but it must be {expected}; fix the file or "
        "download the checkpoint again"
    )


def _check_section(source, name: str, sub: VisionConfig | TextConfig) -> None:
    """Every integer field a positive int (token ids: >= 0), every float positive, a known activation."""
    for f in fields(sub):
        value = getattr(sub, f.name)
        where = f"{name}.{f.name}"
        if f.name.endswith("_token_id"):
            if not _is_int(value) or value < 0:
                raise _invalid(source, where, value, "an integer >= 0")
        elif f.type == "int":
            if not _is_int(value) or value < 1:
                raise _invalid(source, where, value, "a positive integer")
        elif f.type == "float":
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise _invalid(source, where, value, "a positive number")
    if sub.hidden_act not in SUPPORTED_ACTIVATIONS:
        raise _invalid(
            source,
            f"{name}.hidden_act",
            sub.hidden_act,
            "one of " + ", ".join(SUPPORTED_ACTIVATIONS),
        )
    if sub.hidden_size % sub.num_attention_heads:
        raise ModelLoadError(
            f"{source}: {name}.hidden_size {sub.hidden_size} is not divisible by "
            f"{name}.num_attention_heads {sub.num_attention_heads}"
        )


def _check_vision(source, v: VisionConfig) -> None:
    if v.image_size % v.patch_size:
        raise ModelLoadError(
            f"{source}: vision_config.image_size {v.image_size} is not divisible by "
            f"vision_config.patch_size {v.patch_size}"
        )


def _check_text(source, t: TextConfig, v: VisionConfig) -> None:
    for name in ("bos_token_id", "sep_token_id", "pad_token_id"):
        if getattr(t, name) >= t.vocab_size:
            raise ModelLoadError(
                f"{source}: text_config.{name} {getattr(t, name)} is outside the vocabulary "
                f"(text_config.vocab_size {t.vocab_size})"
            )
    if t.encoder_hidden_size != v.hidden_size:
        raise ModelLoadError(
            f"{source}: text_config.encoder_hidden_size={t.encoder_hidden_size} does not match "
            f"vision_config.hidden_size={v.hidden_size}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pick(kind: type, raw: dict[str, Any]):
    names = kind.__dataclass_fields__
    return kind(**{k: v for k, v in raw.items() if k in names and v is not None})
