"""The CUDA fast path of the torch backend: a static KV cache and graph-captured decode steps.

Decoding is launch-bound: one decoder step of BLIP's 12-layer text decoder is
a few hundred small kernels. The fast path makes every step after the prompt
the *same* computation on the *same* tensors, so it can be captured once in a
CUDA graph and replayed:

* the self-attention cache is preallocated at ``max_len`` and attention always
  runs over the full static length under a position mask (keys at positions
  after the current one are masked out), instead of over a growing prefix;
* the position is a one-element device tensor, the token ids a static buffer:
  a step writes them in place and replays the graph;
* cross-attention keys/values live in persistent buffers, one copy per image,
  written once per batch (beams fold into the query axis, as in the default
  path: :meth:`blipcap.model.text.DecoderLayer.cross_attention_and_ffn`).

Three ways to run the static step (:class:`FastPathOptions` ``step``):
``"graphs"`` (torch.cuda.CUDAGraph, the default), ``"compile"``
(``torch.compile(mode="reduce-overhead")``, inductor's CUDA graphs; slower to
start, selectable so both can be measured) and ``"eager"`` (the static-shape
step without capture). Without CUDA, ``"graphs"`` falls back to ``"eager"``, so
every line of this module runs and is tested on a CPU-only machine; the
default CPU backend does not use it at all (its numerics stay those of the
parity suite).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import OptionsError

STEP_MODES = ("graphs", "compile", "eager")
ENV_STEP = "BLIPCAP_DECODE_STEP"
ENV_FAST = "BLIPCAP_FAST_PATH"


@dataclass(frozen=True)
class FastPathOptions:
    """How the fast path runs its decoder steps."""

    step: str = "graphs"
    """"graphs": CUDA graph capture; "compile": torch.compile(mode="reduce-overhead"); "eager"."""
    max_graphs: int = 8
    """Captured graphs kept (one per batch shape); the least recently used is dropped."""
    max_buffer_sets: int = 2
    """Buffer sets kept (one per rows-per-image x length, e.g. greedy and beam 3); LRU."""
    compile_backend: str = "inductor"
    """torch.compile backend for step="compile" (tests use "eager" to check the trace quickly)."""

    def __post_init__(self) -> None:
        if self.step not in STEP_MODES:
            raise OptionsError(
                f"unknown decode step mode {self.step!r}; choose one of {', '.join(STEP_MODES)} "
                f"(environment variable {ENV_STEP})"
            )
        if self.max_graphs < 1 or self.max_buffer_sets < 1:
            raise OptionsError("max_graphs and max_buffer_sets must be >= 1")

    @classmethod
    def from_env(cls) -> FastPathOptions:
        return cls(step=os.environ.get(ENV_STEP, "graphs").strip().lower() or "graphs")


def fast_path_enabled(device: str) -> bool:
    """The fast path is on for CUDA devices unless BLIPCAP_FAST_PATH=0."""
    if os.environ.get(ENV_FAST, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return device.startswith("cuda")


# -- the static-shape decoder step ---------------------------------------------------------


def static_step(decoder, input_ids, position, cache, cross, rows_per_image: int, arange):
    """One decoder step with static shapes: (rows, t) ids at positions ``position .. position+t-1``.

    ``cache`` is (layers, 2, rows, heads, L, head_dim), written in place at
    those positions; attention runs over all L cached positions, masked to
    those <= each query's own position (causal within the step too).
    ``position`` is a one-element int64 tensor so that a captured graph can be
    replayed at every position. Returns (rows, vocab) logits of the last token.
    """
    import torch
    import torch.nn.functional as F

    t = input_ids.shape[1]
    positions = position + arange[:t]  # (t,)
    mask = arange[None, :] <= positions[:, None]  # (t, L): key j visible to query i
    emb = decoder.bert.embeddings
    x = emb.word_embeddings(input_ids) + emb.position_embeddings(positions)[None]
    x = emb.LayerNorm(x)
    for i, layer in enumerate(decoder.bert.encoder.layer):
        p = layer.attention.proj
        keys, values = cache[i, 0], cache[i, 1]  # (rows, heads, L, head_dim) views
        keys.index_copy_(2, positions, layer._split(p.key(x)))
        values.index_copy_(2, positions, layer._split(p.value(x)))
        q = layer._split(p.query(x))
        attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        x = layer.attention.output(layer._merge(attn), x)
        x = layer.cross_attention_and_ffn(x, cross[i], rows_per_image)
    head = decoder.cls.predictions
    return head.decoder(head.transform(x[:, -1])).to(torch.float32)


def sliced_step(decoder, ids, position, cache, cross, images: int, rows_per_image: int, arange):
    """:func:`static_step` on the leading ``images`` of full-capacity buffers.

    Slicing happens inside, so torch.compile sees the buffers themselves (whose
    addresses are marked static) and specializes on the integer batch size.
    """
    rows = images * rows_per_image
    cross = [(k[:images], v[:images]) for k, v in cross]
    return static_step(
        decoder, ids[:rows], position, cache[:, :, :rows], cross, rows_per_image, arange
    )


class StaticBuffers:
    """The persistent tensors captured graphs read and write, for up to ``capacity`` images.

    Smaller batches use the leading slices of the same storage, so graphs
    captured for different batch sizes share one set of buffers.
    """

    def __init__(self, config, capacity: int, rows_per_image: int, max_len: int, device, dtype):
        import torch

        t, v = config.text, config.vision
        heads, head_dim = t.num_attention_heads, t.hidden_size // t.num_attention_heads
        rows = capacity * rows_per_image
        self.capacity, self.rows_per_image, self.max_len = capacity, rows_per_image, max_len
        kw = dict(device=device, dtype=dtype)
        self.cache = torch.zeros(t.num_hidden_layers, 2, rows, heads, max_len, head_dim, **kw)
        self.cross = [
            (
                torch.zeros(capacity, heads, v.seq_len, head_dim, **kw),
                torch.zeros(capacity, heads, v.seq_len, head_dim, **kw),
            )
            for _ in range(t.num_hidden_layers)
        ]
        self.input_ids = torch.zeros(rows, 1, dtype=torch.int64, device=device)
        self.position = torch.zeros(1, dtype=torch.int64, device=device)
        self.arange = torch.arange(max_len, dtype=torch.int64, device=device)

    def nbytes(self) -> int:
        tensors = [self.cache, self.input_ids] + [x for kv in self.cross for x in kv]
        return sum(x.numel() * x.element_size() for x in tensors)


@dataclass
class _Captured:
    graph: Any
    logits: Any


class FastPath:
    """Static-shape sessions for one :class:`~blipcap.backends.torch.TorchBackend`."""

    def __init__(self, backend, options: FastPathOptions | None = None):
        self.backend = backend
        self.torch = backend.torch
        self.options = options or FastPathOptions()
        self.cuda = backend.device.startswith("cuda") and self.torch.cuda.is_available()
        requested = self.options.step
        # CUDA graphs need CUDA; on a CPU the same static step runs eagerly.
        self.step_mode = "eager" if requested == "graphs" and not self.cuda else requested
        self._buffers: OrderedDict[tuple[int, int], StaticBuffers] = OrderedDict()
        self._graphs: OrderedDict[tuple[int, int, int], _Captured] = OrderedDict()
        self._pool = None
        self._compiled = None

    @property
    def decoder(self):
        return self.backend.model.text_decoder

    # -- buffers and sessions -----------------------------------------------------------

    def buffers_for(self, images: int, rows_per_image: int, max_len: int) -> StaticBuffers:
        """Buffers for this (rows per image, length), grown (and graphs dropped) when too small."""
        key = (rows_per_image, max_len)
        buf = self._buffers.get(key)
        if buf is not None and buf.capacity >= images:
            self._buffers.move_to_end(key)
        else:
            self._drop_graphs(key)
            self._buffers.pop(key, None)  # free the old buffers before allocating bigger ones
            while len(self._buffers) >= self.options.max_buffer_sets:
                old, _ = self._buffers.popitem(last=False)
                self._drop_graphs(old)
            buf = StaticBuffers(
                self.backend.config,
                images,
                rows_per_image,
                max_len,
                self.backend.device,
                self.backend.dtype,
            )
            if self.step_mode == "compile":
                # Inductor's CUDA graphs may only mutate inputs whose address never changes.
                for x in [buf.cache, buf.input_ids, buf.position] + [
                    y for kv in buf.cross for y in kv
                ]:
                    self.torch._dynamo.mark_static_address(x)
            self._buffers[key] = buf
        return buf

    def start(self, pixel_values: np.ndarray, rows_per_image: int, max_len: int) -> StaticSession:
        """Encode a batch of preprocessed images and open a static-shape decoder session."""
        torch = self.torch
        pixels = torch.from_numpy(np.ascontiguousarray(pixel_values))
        if self.cuda:
            pixels = pixels.pin_memory().to(self.backend.device, non_blocking=True)
        with torch.no_grad():
            embeds = self.backend.model.vision_model(pixels.to(self.backend.dtype))
        return self.start_from_embeds(embeds, rows_per_image, max_len)

    def start_from_embeds(self, image_embeds, rows_per_image: int, max_len: int) -> StaticSession:
        """A session for images already encoded (the overlapped pipeline encodes ahead)."""
        torch = self.torch
        images = image_embeds.shape[0]
        buf = self.buffers_for(images, rows_per_image, max_len)
        with torch.no_grad():
            for layer, (k_buf, v_buf) in zip(
                self.decoder.bert.encoder.layer, buf.cross, strict=True
            ):
                p = layer.crossattention.proj
                k_buf[:images].copy_(layer._split(p.key(image_embeds)))
                v_buf[:images].copy_(layer._split(p.value(image_embeds)))
            # Masked positions hold the previous batch's keys; zero them so that
            # nothing non-finite can leak through a masked (zero) attention weight.
            buf.cache[:, :, : images * rows_per_image].zero_()
        return StaticSession(self, buf, images)

    # -- running one step ---------------------------------------------------------------

    def run_step(self, buf: StaticBuffers, images: int, length: int, input_ids):
        """Logits (rows, vocab) float32 of one step at position ``length``."""
        torch = self.torch
        rows = images * buf.rows_per_image
        with torch.no_grad():
            buf.position.fill_(length)
            if input_ids.shape[1] != 1 or self.step_mode == "eager":
                # Prompts (several tokens, once per batch) always run eagerly.
                cross = [(k[:images], v[:images]) for k, v in buf.cross]
                return static_step(
                    self.decoder, input_ids, buf.position, buf.cache[:, :, :rows], cross,
                    buf.rows_per_image, buf.arange,
                )  # fmt: skip
            buf.input_ids[:rows].copy_(input_ids)
            if self.step_mode == "compile":
                return self._compiled_step()(
                    self.decoder, buf.input_ids, buf.position, buf.cache, buf.cross, images,
                    buf.rows_per_image, buf.arange,
                ).clone()  # fmt: skip
            captured = self._graph(buf, images)
            captured.graph.replay()
            return captured.logits.clone()  # the next replay overwrites the graph's output

    def _compiled_step(self):
        if self._compiled is None:
            self._compiled = self.torch.compile(
                sliced_step,
                mode="reduce-overhead" if self.options.compile_backend == "inductor" else None,
                backend=self.options.compile_backend,
                fullgraph=True,
                dynamic=False,
            )
        return self._compiled

    def _graph(self, buf: StaticBuffers, images: int) -> _Captured:
        key = (images, buf.rows_per_image, buf.max_len)
        captured = self._graphs.get(key)
        if captured is not None:
            self._graphs.move_to_end(key)
            return captured
        torch = self.torch

        def step():
            return sliced_step(
                self.decoder, buf.input_ids, buf.position, buf.cache, buf.cross, images,
                buf.rows_per_image, buf.arange,
            )  # fmt: skip

        # Warm up on a side stream (as torch.cuda.graphs asks). The warm-up runs
        # the real step at the real position, so what it writes into the cache
        # is exactly what the replay writes again.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            logits = step()
        captured = _Captured(graph, logits)
        self._graphs[key] = captured
        while len(self._graphs) > self.options.max_graphs:
            self._graphs.popitem(last=False)
        return captured

    def _drop_graphs(self, key: tuple[int, int]) -> None:
        for g in [k for k in self._graphs if k[1:] == key]:
            del self._graphs[g]

    @property
    def captured_graphs(self) -> int:
        return len(self._graphs)


class StaticSession:
    """A :class:`~blipcap.decoding.DecoderSession` over static buffers."""

    def __init__(self, fast: FastPath, buf: StaticBuffers, images: int):
        self.fast = fast
        self.buf = buf
        self.images = images
        self.rows = images * buf.rows_per_image
        self.length = 0

    def step(self, input_ids):
        t = input_ids.shape[1]
        if self.length + t > self.buf.max_len:
            raise ValueError(f"step past the static length {self.buf.max_len}")
        logits = self.fast.run_step(self.buf, self.images, self.length, input_ids)
        self.length += t
        return logits

    def reorder(self, rows) -> None:
        """Beam search: row i continues from row ``rows[i]`` (only the filled positions move)."""
        with self.fast.torch.no_grad():
            filled = self.buf.cache[:, :, : self.rows, :, : self.length]
            filled.copy_(filled.index_select(2, rows))
