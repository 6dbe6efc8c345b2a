"""BLIP's image-text matching model (``BlipForImageTextRetrieval``) in the lean engine.

Module and parameter names follow the Hugging Face checkpoint keys
(``vision_model.``, ``text_encoder.``, ``vision_proj``, ``text_proj``,
``itm_head``) so ``Salesforce/blip-itm-large-coco`` loads as is.

* The vision encoder is the captioner's (:mod:`.vision`).
* The text encoder is BERT with the captioner's layer modules, run
  bidirectionally: self-attention over the caption (padding masked), then
  cross-attention to the image. Its [CLS] state feeds ``itm_head``, whose
  softmax is the probability that the caption matches the image.
* As in the decoder, the cross-attention keys/values are computed once per
  image and shared by every caption of that image (the captions are folded
  into the query axis, which is exact because cross-attention has no mask).
* The contrastive (ITC) path is cheap and included: the text encoder without
  the image, ``text_proj`` and ``vision_proj`` of the [CLS] states, cosine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelLoadError
from .config import BlipConfig, TextConfig
from .processing import load_tokenizer_json
from .text import DecoderLayer, TextEmbeddings
from .vision import VisionModel
from .weights import check_against_config, no_weight_init, read_state_dict, weight_files

# Buffers written by older transformers releases, and a BERT pooler that
# BlipForImageTextRetrieval never uses (transformers skips both on load too).
_IGNORED_SUFFIXES = ("position_ids",)
_IGNORED_PREFIXES = ("text_encoder.pooler.",)


@dataclass(frozen=True)
class ItmConfig:
    """The dimensions of a BlipForImageTextRetrieval checkpoint (its ``config.json``)."""

    blip: BlipConfig
    image_text_hidden_size: int = 256
    """Width of the shared ITC embedding space (``vision_proj`` / ``text_proj``)."""

    @property
    def vision(self):
        return self.blip.vision

    @property
    def text(self) -> TextConfig:
        return self.blip.text

    @property
    def random_weights(self) -> bool:
        return self.blip.random_weights

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], source: str | os.PathLike[str] = "config.json"
    ) -> ItmConfig:
        """Read and check a parsed ``config.json`` (:meth:`BlipConfig.from_dict` plus the ITC width)."""
        blip = BlipConfig.from_dict(raw, source)
        width = raw.get("image_text_hidden_size", 256)
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ModelLoadError(
                f"{source}: image_text_hidden_size is {width!r}, but it must be a positive "
                "integer; fix the file or download the checkpoint again"
            )
        return cls(blip=blip, image_text_hidden_size=width)


class EncoderLayer(DecoderLayer):
    """One BERT layer of the ITM text encoder: the decoder layer's modules (and checkpoint keys),
    with bidirectional self-attention and no cache."""

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        cross: tuple[torch.Tensor, torch.Tensor] | None,
        rows_per_image: int,
    ) -> torch.Tensor:
        p = self.attention.proj
        q, k, v = (self._split(proj(x)) for proj in (p.query, p.key, p.value))
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = self.attention.output(self._merge(attn), x)
        if cross is None:  # text only (the ITC path)
            return self.output(F.gelu(self.intermediate.dense(x)), x)
        return self.cross_attention_and_ffn(x, cross, rows_per_image)


class EncoderLayers(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.layer = nn.ModuleList(EncoderLayer(c) for _ in range(c.num_hidden_layers))


class TextEncoder(nn.Module):
    """Caption tokens (+ the image) -> hidden states; the ``text_encoder.`` of the checkpoint."""

    def __init__(self, c: TextConfig):
        super().__init__()
        self.config = c
        self.embeddings = TextEmbeddings(c)
        self.encoder = EncoderLayers(c)

    def cross_kv(self, image_embeds: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer cross-attention keys/values, one copy per image: (images, heads, seq, head_dim)."""
        out = []
        for layer in self.encoder.layer:
            p = layer.crossattention.proj
            out.append((layer._split(p.key(image_embeds)), layer._split(p.value(image_embeds))))
        return out

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cross: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        rows_per_image: int = 1,
    ) -> torch.Tensor:
        """(rows, tokens) -> (rows, tokens, hidden). ``attention_mask`` is 1 for tokens, 0 for padding.

        With ``cross`` (from :meth:`cross_kv`), each block of ``rows_per_image``
        consecutive rows attends to one image; without it the text is encoded alone.
        """
        x = self.embeddings(input_ids, 0)
        # Padding is masked as a key only; a row without padding needs no mask at all.
        mask = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        for i, layer in enumerate(self.encoder.layer):
            x = layer(x, mask, None if cross is None else cross[i], rows_per_image)
        return x


class BlipItmModel(nn.Module):
    """The parts of BlipForImageTextRetrieval: image encoder, text encoder, ITM head, ITC projections."""

    def __init__(self, config: ItmConfig):
        super().__init__()
        self.config = config
        self.vision_model = VisionModel(config.vision)
        self.text_encoder = TextEncoder(config.text)
        self.vision_proj = nn.Linear(config.vision.hidden_size, config.image_text_hidden_size)
        self.text_proj = nn.Linear(config.text.hidden_size, config.image_text_hidden_size)
        self.itm_head = nn.Linear(config.text.hidden_size, 2)

    def itm_logits(
        self,
        image_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        rows_per_image: int,
    ) -> torch.Tensor:
        """(rows, 2) logits [no match, match]; rows ``i*R .. i*R+R-1`` are captions of image ``i``."""
        cross = self.text_encoder.cross_kv(image_embeds)
        hidden = self.text_encoder(input_ids, attention_mask, cross, rows_per_image)
        return self.itm_head(hidden[:, 0])

    def itc_similarity(
        self,
        image_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        rows_per_image: int,
    ) -> torch.Tensor:
        """(rows,) cosine similarity of each caption to its image in the contrastive space."""
        text = self.text_encoder(input_ids, attention_mask)
        text_feat = F.normalize(self.text_proj(text[:, 0]), dim=-1)
        image_feat = F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1)
        image_feat = image_feat.repeat_interleave(rows_per_image, dim=0)
        return (text_feat * image_feat).sum(-1)


class ItmTokenizer:
    """Captions -> ``[CLS] caption [SEP]`` token ids, what ``BlipProcessor`` feeds the ITM model.

    transformers' BlipForImageTextRetrieval reads the ids as given, so the
    first token is [CLS] (the original BLIP code swapped in [ENC]; the
    published Hugging Face checkpoints are scored the transformers way).
    """

    def __init__(self, directory: Path, max_len: int, pad_token_id: int):
        self._tok = load_tokenizer_json(directory)
        path = directory / "tokenizer.json"
        ids = {t: self._tok.token_to_id(t) for t in ("[CLS]", "[SEP]")}
        if None in ids.values():
            raise ModelLoadError(
                f"{path} has no [CLS] or [SEP] token; is it BLIP's BERT tokenizer?"
            )
        self.cls_id, self.sep_id = ids["[CLS]"], ids["[SEP]"]
        self.max_len = max_len
        self.pad_token_id = pad_token_id

    def encode(self, text: str) -> list[int]:
        """The ids of one caption, cut to the model's positions (keeping the final [SEP])."""
        body = self._tok.encode(text, add_special_tokens=False).ids[: self.max_len - 2]
        return [self.cls_id, *body, self.sep_id]

    def batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), right-padded with the pad id to the longest caption."""
        rows = [self.encode(t) for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids, mask


def load_itm_model(directory: Path, config: ItmConfig, dtype: torch.dtype, device) -> BlipItmModel:
    """Build the ITM model and load the checkpoint in ``directory`` by key name; strict about keys and shapes."""
    with torch.device("meta"), no_weight_init():
        model = BlipItmModel(config)
    expected = model.state_dict()
    state = read_state_dict(weight_files(directory))
    state = {
        k: v
        for k, v in state.items()
        if not k.endswith(_IGNORED_SUFFIXES) and not k.startswith(_IGNORED_PREFIXES)
    }
    missing = sorted(set(expected) - set(state))
    if missing:
        decoder = any(k.startswith("text_decoder.") for k in state)
        hint = (
            " It is a captioning checkpoint: pass it to --model, and an image-text matching "
            "checkpoint (e.g. Salesforce/blip-itm-large-coco) to --rerank-model."
            if decoder
            else " Is it a BLIP image-text matching checkpoint (BlipForImageTextRetrieval)?"
        )
        raise ModelLoadError(
            f"the checkpoint in {directory} lacks {len(missing)} weight(s) the image-text "
            f"matching model needs, e.g. {missing[:3]}.{hint}"
        )
    check_against_config(state, expected, directory)
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval().requires_grad_(False)
