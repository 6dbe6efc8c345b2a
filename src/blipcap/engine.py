"""The caption engine: sources in, one :class:`~blipcap.results.Caption` per source out, in order.

Four named stages, written once; :meth:`Captioner.caption_iter
<blipcap.captioner.Captioner.caption_iter>` runs them through :func:`run`:

* **prepare** - source -> pixels at the model's size, or an item error; in
  worker threads, a bounded window ahead of the model (:func:`decode_ahead`);
* **encode** - a batch's good pixels -> what decoding starts from (the plain
  stages stack them; the CUDA pipeline copies them to the GPU and runs the
  vision encoder on a side stream, so it overlaps the previous batch's decoding);
* **decode** - :func:`blipcap.decoding.generate`, token ids per image and caption;
* **finish** - token ids -> captions, item errors merged back in input order.

What differs between the plain path and the CUDA pipeline is a :class:`Stages`
object (prepare / encode / decode and whether encoding overlaps decoding); the
loop, the out-of-memory back-off and the merge are this module's.
:func:`split_good` is the one "split good from bad, run the good, merge in
order" helper, used here, by the Ray actor and by the server.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from .batching import BatchSizer, retry_smaller
from .inputs import Prepared
from .memory import is_out_of_memory
from .options import CaptionOptions
from .results import Caption, ItemError, Provenance

T = TypeVar("T")
R = TypeVar("R")


# -- one input, good or bad --------------------------------------------------------------------


@dataclass(frozen=True)
class Split(Generic[T]):
    """Items split into the good ones (to run) and the rest, to merge back in input order."""

    items: list[T]
    flags: list[bool]

    @property
    def good(self) -> list[T]:
        return [item for item, ok in zip(self.items, self.flags, strict=True) if ok]

    def merge(
        self,
        results: Iterable[R],
        bad: Callable[[T], R],
        good: Callable[[T, R], R] | None = None,
    ) -> list[R]:
        """One entry per item, in input order: ``good(item, result)`` (default: the result)
        for the good items, taking ``results`` in turn, and ``bad(item)`` for the rest."""
        it = iter(results)
        out: list[R] = []
        for item, ok in zip(self.items, self.flags, strict=True):
            if not ok:
                out.append(bad(item))
                continue
            result = next(it)
            out.append(good(item, result) if good is not None else result)
        if next(it, _END) is not _END:
            raise RuntimeError(f"more results than the {sum(self.flags)} good items")
        return out


_END = object()


def split_good(items: Iterable[T], ok: Callable[[T], bool]) -> Split[T]:
    """Split ``items`` by ``ok``; run ``.good``, then ``.merge`` the results back in order."""
    items = list(items)
    return Split(items, [bool(ok(item)) for item in items])


def decode_ahead(
    prepare: Callable[[Any], T], sources: Iterable[Any], *, workers: int, window: int, name: str
) -> Iterator[T]:
    """``prepare`` each source in ``workers`` threads, at most ``window`` ahead, in input order.

    The window bounds memory (decoded images waiting for the model) and keeps
    the output order equal to the input order whatever order the threads finish in.
    """
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        pending: deque[Future[T]] = deque()
        for source in sources:
            pending.append(pool.submit(prepare, source))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# -- the stages ---------------------------------------------------------------------------------


class Stages(Protocol):
    """The prepare, encode and decode stages of one way of running the model."""

    name: str
    """Thread-name prefix of the prepare workers."""
    workers: int
    overlap: bool
    """Whether batch N+1 is encoded before batch N is decoded (they run concurrently)."""

    def prepare(self, source: Any) -> Prepared: ...

    def encode(self, items: Sequence[Prepared]) -> Any:
        """What decoding starts from, for the good ``items`` (at least one)."""
        ...

    def decode(self, encoded: Any, options: CaptionOptions) -> list[list[list[int]]]:
        """Token ids per image per caption (through :func:`blipcap.decoding.generate`)."""
        ...


@dataclass
class _Encoded:
    items: list[Prepared]
    value: Any = None
    error: BaseException | None = None
    """An out-of-memory error of the encode stage: the batch is redone in smaller pieces."""


class Finisher:
    """The finish stage: token ids -> :class:`Caption` records, errors merged in input order."""

    def __init__(self, result: Callable[[str | None, list, CaptionOptions, Provenance], Caption]):
        self.result = (
            result  # one good item's record from its token lists (Captioner.decoded_result)
        )

    def records(
        self,
        items: list[Prepared],
        outputs: list[Any],
        options: CaptionOptions,
        provenance: Provenance,
    ) -> list[Caption]:
        """``outputs``: per good item, its token ids per caption or an (out-of-memory) exception."""

        def bad(p: Prepared) -> Caption:
            return Caption(path=p.label, caption=None, error=p.error, provenance=provenance)

        def good(p: Prepared, out: Any) -> Caption:
            if isinstance(out, BaseException):
                error = ItemError.from_exception(out)
                return Caption(path=p.label, caption=None, error=error, provenance=provenance)
            return self.result(p.label, out, options, provenance)

        return split_good(items, lambda p: p.ok).merge(outputs, bad, good)


# -- the loop ---------------------------------------------------------------------------------


def run(
    stages: Stages,
    sources: Iterable[Any],
    options: CaptionOptions,
    *,
    sizer: BatchSizer,
    finisher: Finisher,
    provenance: Provenance,
    bar: Any = None,
) -> Iterator[Caption]:
    """The one caption loop: prepare ahead, batch, encode, decode, finish; results in input order.

    Out of memory, a batch is halved and retried down to one image (an image
    that does not fit alone becomes an item error), and ``sizer`` keeps the
    smaller size for the batches that follow.
    """
    window = max(2 * sizer.size, 2 * stages.workers)
    prepared = decode_ahead(
        stages.prepare, sources, workers=stages.workers, window=window, name=stages.name
    )
    pending: _Encoded | None = None
    for batch in _batches(prepared, sizer):
        encoded = _encode(stages, batch)
        if pending is not None:
            yield from _finish(stages, pending, options, sizer, finisher, provenance, bar)
        pending = encoded
        if not stages.overlap:
            yield from _finish(stages, pending, options, sizer, finisher, provenance, bar)
            pending = None
    if pending is not None:
        yield from _finish(stages, pending, options, sizer, finisher, provenance, bar)


def _batches(prepared: Iterable[Prepared], sizer: BatchSizer) -> Iterator[list[Prepared]]:
    batch: list[Prepared] = []
    for item in prepared:
        batch.append(item)
        if len(batch) >= sizer.size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encode(stages: Stages, items: list[Prepared]) -> _Encoded:
    good = [p for p in items if p.ok]
    if not good:
        return _Encoded(items)
    try:
        return _Encoded(items, stages.encode(good))
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        return _Encoded(items, error=exc.with_traceback(None))  # redone smaller by _tokens


def _tokens(
    stages: Stages, encoded: _Encoded, options: CaptionOptions, sizer: BatchSizer
) -> list[Any]:
    """Token ids per good item, or an OutOfMemoryError for one that does not fit even alone."""
    good = [p for p in encoded.items if p.ok]
    if not good:
        return []
    failure = encoded.error
    if failure is None:
        try:
            return stages.decode(encoded.value, options)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            # Without its traceback the error no longer holds the failed batch's tensors.
            failure = exc.with_traceback(None)
    encoded.value = encoded.error = None  # let the failed batch's memory go before the retries

    def again(part: Sequence[Prepared]) -> list[Any]:
        return stages.decode(stages.encode(part), options)

    return retry_smaller(again, good, failure, sizer.shrink)


def _finish(stages, encoded, options, sizer, finisher, provenance, bar) -> Iterator[Caption]:
    outputs = _tokens(stages, encoded, options, sizer)
    for record in finisher.records(encoded.items, outputs, options, provenance):
        if bar is not None:
            bar.update(1)
        yield record


__all__ = ["Finisher", "Prepared", "Split", "Stages", "decode_ahead", "run", "split_good"]
