"""Export-friendly views of the lean model: the two graphs the ONNX backend runs.

The runtime modules (:mod:`blipcap.model.vision`, :mod:`blipcap.model.text`)
write into a preallocated cache in place and branch on Python ints, which a
traced graph cannot express. These wrappers reuse the same parameters and
compute the same functions in a functional form:

* :class:`VisionGraph`: ``pixel_values (B, 3, H, W)`` -> per-layer
  cross-attention keys and values ``(B, heads, S, head_dim)``, one copy per
  image (the image embeddings themselves are not needed after that);
* :class:`DecoderStepGraph`: ``input_ids (N, T)``, ``cache_rows (N,)``, the
  self-attention cache as ``past_key_i``, ``past_value_i`` ``(N', heads, P,
  head_dim)`` per layer, and the cross keys/values -> ``logits (N, vocab)``
  of the last position and ``present_key_i``, ``present_value_i`` ``(N,
  heads, P + T, head_dim)``. ``cache_rows`` picks, for every row, the row of
  the past it continues (beam search reorders through it; greedy passes
  ``0..N-1``), so the reorder runs inside the graph on whatever device holds
  the cache. ``P`` may be 0 (the prompt step). The ``R = N / B`` rows of an
  image are folded into the query axis exactly as in
  :class:`blipcap.model.text.DecoderLayer`, so all beams share one copy of
  the image's keys/values.

Every attention is written as ONNX Runtime's fused
``com.microsoft.MultiHeadAttention`` (see :func:`fused_attention` and
:func:`cached_self_attention`): one node instead of the transposes,
scalings, products and softmax the exporter spells scaled dot-product
attention out into. On a CPU the vision encoder's runs as a tiled (flash)
kernel that keeps its 577 x 577 scores per head in cache; the decoder's
cross-attention takes the image's keys/values as they are stored, with no
transpose per step, and its self-attention appends the step's keys/values
to the past inside the node, writing each layer's cache output directly.

Two projections are laid out differently from the checkpoint, for speed
with the same results: the vision encoder's fused ``qkv`` projection runs as
three products (a fused one would be sliced into queries, keys and values:
three copies per layer, 1.7-3.3% of the encoder's time in profiles), and
the decoder's separate self-attention query, key and value projections run
as one product (one kernel instead of three at every step).
"""

from __future__ import annotations

from contextvars import ContextVar

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


class _MultiHeadAttention(torch.autograd.Function):
    """Scaled dot-product attention that exports as ``com.microsoft.MultiHeadAttention``."""

    @staticmethod
    def forward(ctx, q, k, v, heads: int, scale: float | None):  # noqa: ARG004
        if k.dim() == 3:
            k, v = _split(k, heads), _split(v, heads)
        return _merge(F.scaled_dot_product_attention(_split(q, heads), k, v, scale=scale))

    @staticmethod
    def symbolic(g, q, k, v, heads: int, scale: float | None):
        attrs = {"num_heads_i": heads} | ({} if scale is None else {"scale_f": scale})
        out = g.op("com.microsoft::MultiHeadAttention", q, k, v, **attrs)
        out.setType(q.type())  # same shape as the queries: lets the exporter infer what follows
        return out


class _CachedSelfAttention(torch.autograd.Function):
    """Causal self-attention over ``[past | new]``; exports as ``MultiHeadAttention`` with a past."""

    @staticmethod
    def forward(ctx, q, k, v, past_k, past_v, heads: int):  # noqa: ARG004
        t, start = q.shape[1], past_k.shape[2]
        k = torch.cat([past_k, _split(k, heads)], dim=2)
        v = torch.cat([past_v, _split(v, heads)], dim=2)
        # Query i (at position start + i) sees keys 0..start + i.
        mask = torch.arange(start + t)[None, :] <= (torch.arange(t) + start)[:, None]
        out = F.scaled_dot_product_attention(_split(q, heads), k, v, attn_mask=mask)
        return _merge(out), k, v

    @staticmethod
    def symbolic(g, q, k, v, past_k, past_v, heads: int):
        none = g.op("prim::Constant")
        none.setType(torch._C.OptionalType.ofTensor())  # an omitted optional input
        out, present_k, present_v = g.op(
            "com.microsoft::MultiHeadAttention", q, k, v, none, none, none, past_k, past_v,
            num_heads_i=heads, unidirectional_i=1, outputs=3,
        )  # fmt: skip
        out.setType(q.type())
        for present in (present_k, present_v):
            present.setType(past_k.type().with_sizes([None] * 4))
        return out, present_k, present_v


# True while exporting portable graphs (blipcap export ort): attention is traced as
# plain ONNX operators (MatMul, Softmax, ...) instead of com.microsoft.MultiHeadAttention,
# which ONNX Runtime's mobile package and its CoreML/NNAPI providers do not have.
PLAIN_ATTENTION: ContextVar[bool] = ContextVar("blipcap_plain_attention", default=False)


def _plain_attention(q, k, v, scale: float | None, mask=None) -> torch.Tensor:
    """Attention spelled out (``(B, h, S, hd)`` each): the exporter writes scaled dot-product
    attention with an ``IsNaN`` guard, an operator outside the mobile package."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * (
        q.shape[-1] ** -0.5 if scale is None else scale
    )
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.matmul(scores.softmax(dim=-1), v)


def _plain_self_attention(q, k, v, past_k, past_v, heads: int):
    t, start = q.shape[1], past_k.shape[2]
    k = torch.cat([past_k, _split(k, heads)], dim=2)
    v = torch.cat([past_v, _split(v, heads)], dim=2)
    mask = torch.arange(start + t)[None, :] <= (torch.arange(t) + start)[:, None]
    return _merge(_plain_attention(_split(q, heads), k, v, None, mask)), k, v


def cached_self_attention(q, k, v, past_k, past_v, heads: int):
    """Causal attention of ``q``, ``k``, ``v`` ``(N, T, D)`` over the past ``(N, heads, P, D / heads)`` and themselves.

    Returns the attention output ``(N, T, D)`` and the keys and values with the
    new ones appended ``(N, heads, P + T, D / heads)``.
    """
    if PLAIN_ATTENTION.get():
        return _plain_self_attention(q, k, v, past_k, past_v, heads)
    return _CachedSelfAttention.apply(q, k, v, past_k, past_v, heads)


def fused_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float | None = None
) -> torch.Tensor:
    """Unmasked multi-head attention: ``q (B, S, D)``; ``k``, ``v`` as ``(B, L, D)`` or ``(B, heads, L, D / heads)``.

    Returns ``(B, S, D)``. ``scale`` multiplies the scores (default ``1 / sqrt(D / heads)``).
    Runs as scaled dot-product attention in PyTorch and exports as one
    ``MultiHeadAttention`` node (ONNX Runtime's contrib domain).
    """
    if PLAIN_ATTENTION.get():
        if k.dim() == 3:
            k, v = _split(k, heads), _split(v, heads)
        return _merge(_plain_attention(_split(q, heads), k, v, scale))
    return _MultiHeadAttention.apply(q, k, v, heads, scale)


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """An ``nn.Linear`` over ``weight`` and ``bias`` as given (views stay views: no copy)."""
    out_features, in_features = weight.shape
    linear = nn.Linear(in_features, out_features, device="meta")
    linear.weight = nn.Parameter(weight.detach(), requires_grad=False)
    linear.bias = nn.Parameter(bias.detach(), requires_grad=False)
    return linear


class VisionGraph(nn.Module):
    def __init__(self, model: BlipCaptioningModel):
        super().__init__()
        self.vision = model.vision_model
        self.layers = model.text_decoder.bert.encoder.layer
        self.heads = model.config.text.num_attention_heads
        # Per vision layer, the fused qkv projection as three (query, key, value).
        self.qkv = nn.ModuleList(
            nn.ModuleList(
                _linear(w, b)
                for w, b in zip(
                    layer.self_attn.qkv.weight.chunk(3),
                    layer.self_attn.qkv.bias.chunk(3),
                    strict=True,
                )  # fmt: skip
            )
            for layer in self.vision.encoder.layers
        )

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # blipcap.model.vision.VisionModel.forward, with the fused attention.
        vision = self.vision
        x = vision.embeddings(pixel_values)
        for layer, qkv in zip(vision.encoder.layers, self.qkv, strict=True):
            attn = layer.self_attn
            h = layer.layer_norm1(x)
            q, k, v = (proj(h) for proj in qkv)
            x = x + attn.projection(fused_attention(q, k, v, attn.heads))
            x = x + layer.mlp(layer.layer_norm2(x))
        embeds = vision.post_layernorm(x)
        out = []
        for layer in self.layers:
            p = layer.crossattention.proj
            out.append(_split(p.key(embeds), self.heads))
            out.append(_split(p.value(embeds), self.heads))
        return tuple(out)


class DecoderStepGraph(nn.Module):
    def __init__(self, model: BlipCaptioningModel):
        super().__init__()
        self.decoder = model.text_decoder
        self.heads = model.config.text.num_attention_heads
        self.scale = (model.config.text.hidden_size // self.heads) ** -0.5
        # Per decoder layer, the self-attention query, key and value projections as one.
        self.qkv = nn.ModuleList()
        for layer in self.decoder.bert.encoder.layer:
            p = layer.attention.proj
            projections = (p.query, p.key, p.value)
            self.qkv.append(
                _linear(
                    torch.cat([m.weight for m in projections]),
                    torch.cat([m.bias for m in projections]),
                )
            )

    def forward(
        self, input_ids: torch.Tensor, cache_rows: torch.Tensor, *cache: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """``cache``: the past keys and values of every layer (``past_names``), then the
        cross keys and values (``cross_names``). Returns the logits, then the present
        keys and values of every layer (``present_names``)."""
        bert = self.decoder.bert
        heads = self.heads
        layers = len(bert.encoder.layer)
        past, cross = cache[: 2 * layers], cache[2 * layers :]
        n, t = input_ids.shape
        start = past[0].shape[2]
        positions = torch.arange(t, device=input_ids.device) + start
        emb = bert.embeddings
        x = emb.LayerNorm(emb.word_embeddings(input_ids) + emb.position_embeddings(positions)[None])
        presents: list[torch.Tensor] = []
        for i, layer in enumerate(bert.encoder.layer):
            past_k, past_v = (p.index_select(0, cache_rows) for p in past[2 * i : 2 * i + 2])
            q, k, v = self.qkv[i](x).split(self.qkv[i].out_features // 3, dim=-1)
            attn, k, v = cached_self_attention(q, k, v, past_k, past_v, heads)
            presents += [k, v]
            x = layer.attention.output(attn, x)

            # The R rows of an image (and their t tokens) become one query sequence.
            ck, cv = cross[2 * i], cross[2 * i + 1]  # (images, h, s, hd)
            q = layer.crossattention.proj.query(x)  # (n, t, d)
            q = q.reshape(ck.shape[0], -1, q.shape[-1])  # (images, R * t, d)
            # The queries scaled here and the node's scale 1: with one query row per
            # image (greedy), ONNX Runtime then takes its matrix-vector path, half the
            # time of the scaled product (which repacks the image's keys every step).
            q = q * self.scale
            attn = fused_attention(q, ck, cv, heads, scale=1.0).reshape(n, t, -1)
            x = layer.crossattention.output(attn, x)
            x = layer.output(F.gelu(layer.intermediate.dense(x)), x)

        pred = self.decoder.cls.predictions
        logits = pred.decoder(pred.transform(x[:, -1]))
        return (logits, *presents)
