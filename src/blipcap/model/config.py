"""BLIP dimensions, read from a checkpoint's ``config.json``.

Only the fields the captioning model uses are read; missing ones take the
defaults of transformers' ``BlipVisionConfig`` / ``BlipTextConfig`` (the
published configs rely on some of them).
"""

from __future__ import annotations

from dataclasses import dataclass
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
    def from_dict(cls, raw: dict[str, Any]) -> BlipConfig:
        if raw.get("model_type") not in (None, "blip"):
            raise ModelLoadError(
                f"config.json has model_type {raw.get('model_type')!r}; blipcap runs BLIP "
                "captioning checkpoints (model_type 'blip'), e.g. "
                "Salesforce/blip-image-captioning-large"
            )
        vision = _pick(VisionConfig, raw.get("vision_config") or {})
        text = _pick(TextConfig, raw.get("text_config") or {})
        if "encoder_hidden_size" not in (raw.get("text_config") or {}):
            text = _replace(text, encoder_hidden_size=vision.hidden_size)
        for name, sub in (("vision_config", vision), ("text_config", text)):
            if sub.hidden_act not in SUPPORTED_ACTIVATIONS:
                raise ModelLoadError(f"{name}.hidden_act={sub.hidden_act!r} is not supported")
            if sub.hidden_size % sub.num_attention_heads:
                raise ModelLoadError(
                    f"{name}: hidden_size {sub.hidden_size} is not divisible by "
                    f"num_attention_heads {sub.num_attention_heads}"
                )
        if text.encoder_hidden_size != vision.hidden_size:
            raise ModelLoadError(
                f"text_config.encoder_hidden_size={text.encoder_hidden_size} does not match "
                f"vision_config.hidden_size={vision.hidden_size}"
            )
        return cls(vision=vision, text=text, random_weights=bool(raw.get("blipcap_random_weights")))


def _pick(kind: type, raw: dict[str, Any]):
    names = kind.__dataclass_fields__
    return kind(**{k: v for k, v in raw.items() if k in names and v is not None})


def _replace(obj, **changes):
    from dataclasses import replace

    return replace(obj, **changes)
