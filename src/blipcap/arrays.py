"""The few array operations decoding needs, for torch tensors and numpy arrays.

Decoding (greedy, beam search, sampling) is written once against this small
interface; the torch backend keeps everything on its device, the ONNX backend
works in numpy without importing torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class NumpyOps:
    name = "numpy"

    def tensor(self, data: Any, dtype: str = "int64"):
        return np.asarray(data, dtype=dtype)

    def full(self, shape: tuple[int, ...], value: float, dtype: str):
        return np.full(shape, value, dtype=dtype)

    def arange(self, n: int):
        return np.arange(n, dtype=np.int64)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def copy(self, x):
        return x.copy()

    def log_softmax(self, x):
        x = x.astype(np.float32, copy=False)
        shifted = x - x.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

    def logsumexp(self, x):
        """(rows, vocab) -> (rows,): log of the softmax denominator, for one token's log-probability."""
        top = x.max(axis=-1, keepdims=True)
        return (top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True)))[:, 0]

    def softmax(self, x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def topk(self, x, k: int):
        idx = np.argpartition(-x, k - 1, axis=-1)[..., :k]
        vals = np.take_along_axis(x, idx, axis=-1)
        order = np.argsort(-vals, axis=-1, kind="stable")
        return np.take_along_axis(vals, order, axis=-1), np.take_along_axis(idx, order, axis=-1)

    def argmax(self, x):
        return x.argmax(axis=-1)

    def take_along(self, x, idx, axis: int):
        while idx.ndim < x.ndim:
            idx = idx[..., None]
        idx = np.broadcast_to(idx, idx.shape[: axis + 1] + x.shape[axis + 1 :])
        return np.take_along_axis(x, idx, axis=axis)

    def put_along(self, x, idx, values) -> None:
        np.put_along_axis(x, idx, values, axis=1)

    def where(self, cond, a, b):
        return np.where(cond, a, b)

    def cat(self, xs, axis: int):
        return np.concatenate(xs, axis=axis)

    def min(self, x, axis: int):
        return x.min(axis=axis, keepdims=True)

    def any(self, x) -> bool:
        return bool(np.any(x))

    def all(self, x) -> bool:
        return bool(np.all(x))

    def any_axis(self, x, axis: int):
        return np.any(x, axis=axis, keepdims=True)

    def all_axis(self, x, axis: int):
        return np.all(x, axis=axis, keepdims=True)

    def cumsum(self, x):
        return np.cumsum(x, axis=-1)

    def sort(self, x, descending: bool = False):
        idx = np.argsort(-x if descending else x, axis=-1, kind="stable")
        return np.take_along_axis(x, idx, axis=-1), idx

    def scatter(self, x, idx, values):
        out = np.empty_like(x)
        np.put_along_axis(out, idx, values, axis=-1)
        return out

    def astype(self, x, dtype: str):
        return x.astype(dtype)

    def generator(self, seed: int | None):
        return np.random.default_rng(seed)

    def multinomial(self, probs, generator):
        probs = probs.astype(np.float64)
        probs /= probs.sum(axis=-1, keepdims=True)
        u = generator.random((probs.shape[0], 1))
        return np.minimum((np.cumsum(probs, axis=-1) < u).sum(axis=-1), probs.shape[-1] - 1)


class TorchOps:
    name = "torch"

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device

    def tensor(self, data: Any, dtype: str = "int64"):
        return self.torch.as_tensor(
            np.asarray(data), dtype=getattr(self.torch, dtype), device=self.device
        )

    def full(self, shape, value, dtype: str):
        return self.torch.full(shape, value, dtype=getattr(self.torch, dtype), device=self.device)

    def arange(self, n: int):
        return self.torch.arange(n, device=self.device)

    def to_numpy(self, x) -> np.ndarray:
        return x.detach().cpu().numpy()

    def copy(self, x):
        return x.clone()

    def log_softmax(self, x):
        return self.torch.log_softmax(x.float(), dim=-1)

    def logsumexp(self, x):
        return self.torch.logsumexp(x, dim=-1)

    def softmax(self, x):
        return self.torch.softmax(x, dim=-1)

    def topk(self, x, k: int):
        return self.torch.topk(x, k, dim=-1)

    def argmax(self, x):
        return x.argmax(dim=-1)

    def take_along(self, x, idx, axis: int):
        while idx.ndim < x.ndim:
            idx = idx.unsqueeze(-1)
        return self.torch.take_along_dim(x, idx, dim=axis)

    def put_along(self, x, idx, values) -> None:
        x.scatter_(1, idx, values)

    def where(self, cond, a, b):
        return self.torch.where(cond, a, b)

    def cat(self, xs, axis: int):
        return self.torch.cat(xs, dim=axis)

    def min(self, x, axis: int):
        return x.min(dim=axis, keepdim=True).values

    def any(self, x) -> bool:
        return bool(x.any())

    def all(self, x) -> bool:
        return bool(x.all())

    def any_axis(self, x, axis: int):
        return x.any(dim=axis, keepdim=True)

    def all_axis(self, x, axis: int):
        return x.all(dim=axis, keepdim=True)

    def cumsum(self, x):
        return x.cumsum(dim=-1)

    def sort(self, x, descending: bool = False):
        return self.torch.sort(x, dim=-1, descending=descending)

    def scatter(self, x, idx, values):
        return x.scatter(-1, idx, values)

    def astype(self, x, dtype: str):
        return x.to(getattr(self.torch, dtype))

    def generator(self, seed: int | None):
        g = self.torch.Generator(device=self.device)
        if seed is None:
            g.seed()
        else:
            g.manual_seed(seed)
        return g

    def multinomial(self, probs, generator):
        return self.torch.multinomial(probs.float(), 1, generator=generator).squeeze(1)
