"""BLIP's BERT text decoder (causal self-attention + cross-attention to the image).

Module and parameter names follow the Hugging Face checkpoint keys under
``text_decoder.`` so the state dict loads as is. Two things make it lean:

* Cross-attention keys/values are computed once per *image*
  (:meth:`TextDecoder.cross_kv`) and shared by all rows (beams, samples) of
  that image: the R rows of an image are folded into the query-length axis,
  so one copy of the keys/values serves them all. This is exact, because
  cross-attention has no mask.
* Self-attention keys/values live in a preallocated cache
  (:class:`KVCache`) written in place; beam search reorders it in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TextConfig

CrossKV = list[tuple[torch.Tensor, torch.Tensor]]


class KVCache:
    """Self-attention keys and values for every layer: (layers, 2, rows, heads, max_len, head_dim)."""

    def __init__(self, c: TextConfig, rows: int, max_len: int, device, dtype):
        heads = c.num_attention_heads
        self.data = torch.zeros(
            c.num_hidden_layers, 2, rows, heads, max_len, c.hidden_size // heads,
            device=device, dtype=dtype,
        )  # fmt: skip
        self.length = 0

    def reorder(self, rows: torch.Tensor) -> None:
        """Make row i hold what row ``rows[i]`` held (beam search bookkeeping)."""
        self.data.copy_(self.data.index_select(2, rows))


class TextEmbeddings(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, start: int) -> torch.Tensor:
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        return self.LayerNorm(x)


class Projections(nn.Module):
    def __init__(self, hidden: int, kv_in: int):
        super().__init__()
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(kv_in, hidden)
        self.value = nn.Linear(kv_in, hidden)


class AddNorm(nn.Module):
    def __init__(self, inner: int, hidden: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(inner, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, c: TextConfig, kv_in: int):
        super().__init__()
        self.self = Projections(c.hidden_size, kv_in)  # HF key: attention.self.query
        self.output = AddNorm(c.hidden_size, c.hidden_size, c.layer_norm_eps)

    @property
    def proj(self) -> Projections:
        return self.self


class Intermediate(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)


class DecoderLayer(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.heads = c.num_attention_heads
        self.attention = Attention(c, c.hidden_size)
        self.crossattention = Attention(c, c.encoder_hidden_size)
        self.intermediate = Intermediate(c)
        self.output = AddNorm(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        b, h, t, hd = x.shape
        return x.transpose(1, 2).reshape(b, t, h * hd)

    def forward(
        self,
        x: torch.Tensor,
        cache: torch.Tensor,
        start: int,
        cross: tuple[torch.Tensor, torch.Tensor],
        rows_per_image: int,
    ) -> torch.Tensor:
        x = self.self_attention(x, cache, start)
        return self.cross_attention_and_ffn(x, cross, rows_per_image)

    def self_attention(self, x: torch.Tensor, cache: torch.Tensor, start: int) -> torch.Tensor:
        """Causal self-attention over the cache, writing this step's keys/values at ``start``."""
        t = x.shape[1]
        p = self.attention.proj
        q = self._split(p.query(x))
        cache[0, :, :, start : start + t] = self._split(p.key(x))
        cache[1, :, :, start : start + t] = self._split(p.value(x))
        k, v = cache[0, :, :, : start + t], cache[1, :, :, : start + t]
        if t > 1 and start:
            raise ValueError("multi-token steps are only supported from position 0 (the prompt)")
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)
        return self.attention.output(self._merge(attn), x)

    def cross_attention_and_ffn(
        self, x: torch.Tensor, cross: tuple[torch.Tensor, torch.Tensor], rows_per_image: int
    ) -> torch.Tensor:
        """Cross-attention to the image (one K/V copy per image) and the feed-forward block.

        Shared by the default step and the static-shape step of the CUDA fast path.
        """
        n, t, _ = x.shape
        # Cross-attention: fold the rows of each image into the query axis so
        # every row attends to the image's single copy of keys/values.
        q = self._split(self.crossattention.proj.query(x))  # (n, h, t, hd)
        ck, cv = cross  # (images, h, s, hd)
        images, r = ck.shape[0], rows_per_image
        hd = q.shape[-1]
        q = (
            q.view(images, r, self.heads, t, hd)
            .transpose(1, 2)
            .reshape(images, self.heads, r * t, hd)
        )
        attn = F.scaled_dot_product_attention(q, ck, cv)
        attn = attn.view(images, self.heads, r, t, hd).transpose(1, 2).reshape(n, self.heads, t, hd)
        x = self.crossattention.output(self._merge(attn), x)

        return self.output(F.gelu(self.intermediate.dense(x)), x)

    def forward_full(
        self, x: torch.Tensor, cross: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """The whole sequence at once, causal, no cache: the training path (autograd-safe).

        Right padding needs no mask: a causal position never sees the padding after it.
        """
        p = self.attention.proj
        q, k, v = (self._split(proj(x)) for proj in (p.query, p.key, p.value))
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = self.attention.output(self._merge(attn), x)
        return self.cross_attention_and_ffn(x, cross, rows_per_image=1)


class BertEncoder(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.layer = nn.ModuleList(DecoderLayer(c) for _ in range(c.num_hidden_layers))


class BertModel(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.embeddings = TextEmbeddings(c)
        self.encoder = BertEncoder(c)


class PredictionTransform(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class Predictions(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.transform = PredictionTransform(c)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size)


class Head(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.predictions = Predictions(c)


class TextDecoder(nn.Module):
    """token ids + caches -> next-token logits (of the last position)."""

    def __init__(self, c: TextConfig):
        super().__init__()
        self.config = c
        self.bert = BertModel(c)
        self.cls = Head(c)

    def cross_kv(self, image_embeds: torch.Tensor) -> CrossKV:
        """Per-layer cross-attention keys/values, one copy per image: (images, heads, seq, head_dim)."""
        out = []
        for layer in self.bert.encoder.layer:
            p = layer.crossattention.proj
            out.append((layer._split(p.key(image_embeds)), layer._split(p.value(image_embeds))))
        return out

    def new_cache(self, rows: int, max_len: int, device, dtype) -> KVCache:
        return KVCache(self.config, rows, max_len, device, dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: KVCache,
        cross: CrossKV,
        rows_per_image: int,
    ) -> torch.Tensor:
        start = cache.length
        x = self.bert.embeddings(input_ids, start)
        for i, layer in enumerate(self.bert.encoder.layer):
            x = layer(x, cache.data[i], start, cross[i], rows_per_image)
        cache.length = start + input_ids.shape[1]
        return self.cls.predictions.decoder(self.cls.predictions.transform(x[:, -1]))

    def forward_full(self, input_ids: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: (B, T) token ids + (B, S, D) image embeddings -> (B, T, vocab) logits.

        Every position's next-token logits in one pass, without caches or in-place
        writes, so gradients flow (distillation trains through it).
        """
        x = self.bert.embeddings(input_ids, 0)
        for layer, cross in zip(self.bert.encoder.layer, self.cross_kv(image_embeds), strict=True):
            x = layer.forward_full(x, cross)
        return self.cls.predictions.decoder(self.cls.predictions.transform(x))
