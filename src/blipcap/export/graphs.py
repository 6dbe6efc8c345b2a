"""Export-friendly views of the lean model: the two graphs the ONNX backend runs.

The runtime modules (:mod:`blipcap.model.vision`, :mod:`blipcap.model.text`)
write into a preallocated cache in place and branch on Python ints, which a
traced graph cannot express. These wrappers reuse the same parameters (no
copy) and compute the same functions in a functional form:

* :class:`VisionGraph`: ``pixel_values (B, 3, H, W)`` -> per-layer
  cross-attention keys ``(B, heads, head_dim, S)`` - stored transposed, so
  no decoding step has to transpose them again (the exported
  ``scaled_dot_product_attention`` transposed and rescaled all the image's
  keys at every step: a fifth of an int8 decoder step) - and values
  ``(B, heads, S, head_dim)``, one copy per image;
* :class:`DecoderStepGraph`: ``input_ids (N, T)``, ``cache_rows (N,)``,
  ``past (layers, 2, N', heads, P, head_dim)`` and the cross keys/values ->
  ``logits (N, vocab)`` of the last position and ``present (layers, 2, N,
  heads, P + T, head_dim)``. ``cache_rows`` picks, for every row, the row of
  ``past`` it continues (beam search reorders through it; greedy passes
  ``0..N-1``), so the reorder runs inside the graph on whatever device holds
  the cache. ``P`` may be 0 (the prompt step). The ``R = N / B`` rows of an
  image are folded into the query axis exactly as in
  :class:`blipcap.model.text.DecoderLayer`, so all beams share one copy of
  the image's keys/values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.weights import BlipCaptioningModel


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, t, d = x.shape
    return x.reshape(b, t, heads, d // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, t, hd = x.shape
    return x.transpose(1, 2).reshape(b, t, h * hd)


class VisionGraph(nn.Module):
    def __init__(self, model: BlipCaptioningModel):
        super().__init__()
        self.vision = model.vision_model
        self.layers = model.text_decoder.bert.encoder.layer
        self.heads = model.config.text.num_attention_heads

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        embeds = self.vision(pixel_values)
        out = []
        for layer in self.layers:
            p = layer.crossattention.proj
            out.append(_split(p.key(embeds), self.heads).transpose(2, 3))
            out.append(_split(p.value(embeds), self.heads))
        return tuple(out)


class DecoderStepGraph(nn.Module):
    def __init__(self, model: BlipCaptioningModel):
        super().__init__()
        self.decoder = model.text_decoder
        self.heads = model.config.text.num_attention_heads

    def forward(
        self,
        input_ids: torch.Tensor,
        cache_rows: torch.Tensor,
        past: torch.Tensor,
        *cross: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        bert = self.decoder.bert
        heads = self.heads
        past = past.index_select(2, cache_rows)
        n, t = input_ids.shape
        start = past.shape[4]
        positions = torch.arange(t, device=input_ids.device) + start
        emb = bert.embeddings
        x = emb.LayerNorm(emb.word_embeddings(input_ids) + emb.position_embeddings(positions)[None])
        # Causal mask over [past | new]: query i (at position start + i) sees keys 0..start + i.
        keys = torch.arange(t, device=input_ids.device) + start
        mask = torch.arange(start + t, device=input_ids.device)[None, :] <= keys[:, None]

        presents = []
        for i, layer in enumerate(bert.encoder.layer):
            p = layer.attention.proj
            q = _split(p.query(x), heads)
            k = torch.cat([past[i, 0], _split(p.key(x), heads)], dim=2)
            v = torch.cat([past[i, 1], _split(p.value(x), heads)], dim=2)
            presents.append(torch.stack([k, v]))
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = layer.attention.output(_merge(attn), x)

            q = _split(layer.crossattention.proj.query(x), heads)  # (n, h, t, hd)
            ck_t, cv = cross[2 * i], cross[2 * i + 1]  # (images, h, hd, s), (images, h, s, hd)
            images, hd = ck_t.shape[0], q.shape[-1]
            q = q.reshape(images, -1, heads, t, hd).transpose(1, 2).reshape(images, heads, -1, hd)
            # Scale the few queries, not the 577 keys per head.
            scores = torch.matmul(q * hd**-0.5, ck_t)
            attn = torch.matmul(torch.softmax(scores, dim=-1), cv)
            attn = attn.reshape(images, heads, -1, t, hd).transpose(1, 2).reshape(n, heads, t, hd)
            x = layer.crossattention.output(_merge(attn), x)
            x = layer.output(F.gelu(layer.intermediate.dense(x)), x)

        pred = self.decoder.cls.predictions
        logits = pred.decoder(pred.transform(x[:, -1]))
        return logits, torch.stack(presents)
