"""Dynamic batching: concurrent requests become one model batch.

Two pieces, kept apart so the batching policy can be tested without HTTP,
threads or a model:

* :func:`plan_batch` - a pure function. Given the pending jobs and the time,
  it says which jobs have passed their deadline, which jobs to run now as one
  batch (all with the same caption options, oldest first, up to
  ``max_batch_size`` images), or how long to wait for more work.
* :class:`MicroBatcher` - the asyncio loop around it. Request handlers
  :meth:`~MicroBatcher.submit` decoded images and await a future; the loop
  runs each batch through the one shared Captioner in a single worker thread
  (the model call blocks) and hands every job its slice of the results.

The queue is bounded (:class:`QueueFullError`, answered with 503 and
Retry-After) and each job carries a deadline (:class:`DeadlineError`, 504).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import BackendError, BlipcapError
from ..options import CaptionOptions
from ..results import Caption


class QueueFullError(BlipcapError):
    """The batch queue is full; the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineError(BlipcapError):
    """A job's deadline passed before its batch ran."""


class ShuttingDownError(BlipcapError):
    """The server is draining: it finishes work in flight and refuses new work."""


class Pending(Protocol):
    """What the planner needs to know about a queued job."""

    @property
    def options(self) -> CaptionOptions: ...
    @property
    def size(self) -> int: ...
    @property
    def arrival(self) -> float: ...
    @property
    def deadline(self) -> float: ...


@dataclass(frozen=True)
class BatchPlan:
    """The planner's decision. Indices refer to the ``pending`` sequence it was given."""

    expired: list[int]
    """Jobs whose deadline has passed: answer them with 504, never run them."""
    batch: list[int]
    """Jobs to run now as one model call (empty when it is better to wait)."""
    wait: float
    """When ``batch`` is empty: seconds until the plan can change without new work."""


def plan_batch(
    pending: Sequence[Pending],
    now: float,
    *,
    max_batch_size: int,
    max_wait: float,
    incoming: int = 0,
    max_hold: float | None = None,
) -> BatchPlan:
    """Decide what to run now.

    The oldest live job sets the caption options (one ``caption()`` call takes
    one set of options); later jobs with equal options join it in arrival
    order while the image count stays within ``max_batch_size``. A job larger
    than ``max_batch_size`` runs alone. The batch runs as soon as it is full,
    when the next same-options job would not fit, or when the oldest job has
    waited ``max_wait`` seconds; otherwise the caller waits (at most until the
    oldest job's wait or the earliest deadline is up) for more work.

    ``incoming`` counts requests that were accepted and are being read and
    decoded right now: they will be here in moments, so while there are some
    and the batch is not full the oldest job may wait up to ``max_hold``
    (default ``5 * max_wait``) instead. Without this, clients that all send
    their next request when a batch ends split into a small batch (whoever
    was decoded within ``max_wait``) and a second one.
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    expired = [i for i, job in enumerate(pending) if job.deadline <= now]
    live = [i for i, job in enumerate(pending) if job.deadline > now]
    if not live:
        return BatchPlan(expired, [], math.inf)
    head = pending[live[0]]
    batch: list[int] = []
    total = 0
    blocked = False  # a same-options job is waiting that does not fit: waiting cannot help
    for i in live:
        job = pending[i]
        if job.options != head.options:
            continue
        if batch and total + job.size > max_batch_size:
            blocked = True
            break
        batch.append(i)
        total += job.size
    hold = 5 * max_wait if max_hold is None else max_hold
    limit = max(max_wait, hold) if incoming > 0 else max_wait
    ready = total >= max_batch_size or blocked or now - head.arrival >= limit
    if ready:
        return BatchPlan(expired, batch, 0.0)
    earliest_deadline = min(pending[i].deadline for i in live)
    wait = min(head.arrival + limit, earliest_deadline) - now
    return BatchPlan(expired, [], max(wait, 0.0))


@dataclass(eq=False)
class Job:
    """One request's images waiting for the model."""

    images: list[Any]
    options: CaptionOptions
    arrival: float
    deadline: float
    future: asyncio.Future
    client: str = ""

    @property
    def size(self) -> int:
        return len(self.images)


RunBatch = Callable[[list[Any], CaptionOptions], list[Caption]]


@dataclass
class BatcherStats:
    """Figures the metrics endpoint and Retry-After estimates read."""

    batches: int = 0
    images: int = 0
    recent: deque = field(default_factory=lambda: deque(maxlen=64))
    """(finished_at, images, seconds) of recent batches."""

    def images_per_second(self, now: float, window: float = 60.0) -> float:
        done = [(t, n, s) for t, n, s in self.recent if now - t <= window]
        if not done:
            return 0.0
        busy = sum(s for _, _, s in done)
        return sum(n for _, n, _ in done) / busy if busy > 0 else 0.0


class MicroBatcher:
    """Gathers concurrent jobs into batches run one at a time in one worker thread.

    ``run_batch(images, options)`` is called only from that thread, so a
    Captioner that is not thread-safe is safe here. ``observe`` (optional) is
    called after each batch with ``(batch_size, seconds)`` for metrics.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int = 8,
        max_wait: float = 0.01,
        max_queue: int = 64,
        max_hold: float | None = None,
        observe: Callable[[int, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0, got {max_wait}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.max_hold = max_hold
        self.incoming = 0
        self.observe = observe
        self.clock = clock
        self.stats = BatcherStats()
        self._pending: list[Job] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self._running_images = 0

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blipcap-model")
        self._closing = False
        self._task = asyncio.create_task(self._loop(), name="blipcap-batcher")

    async def stop(self) -> None:
        """Run what is queued, then stop. New submissions are refused from now on."""
        self._closing = True
        if self._task is None:
            return
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            await self._task
        finally:
            self._task = None
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    # -- submitting --------------------------------------------------------
    @property
    def queued_images(self) -> int:
        """Images waiting for a batch (not counting the batch running now)."""
        return sum(job.size for job in self._pending)

    @property
    def running_images(self) -> int:
        return self._running_images

    def retry_after(self) -> int:
        """Seconds after which a refused client may try again: the time to drain the queue."""
        rate = self.stats.images_per_second(self.clock())
        if rate <= 0:
            return 1
        return max(1, math.ceil((self.queued_images + self._running_images) / rate))

    @contextmanager
    def expecting(self, images: int = 1):
        """Mark ``images`` as on their way (being read and decoded) while the block runs.

        Submit right after the block, with no ``await`` in between, so the
        planner never sees the images neither incoming nor queued.
        """
        self.incoming += images
        try:
            yield
        finally:
            self.incoming -= images
            if self._wakeup is not None:
                self._wakeup.set()  # a batch held for these may be ready now

    def submit(
        self, images: list[Any], options: CaptionOptions, *, deadline: float, client: str = ""
    ) -> asyncio.Future:
        """Queue images for captioning; the returned future resolves to one Caption per image.

        Must be called from the event loop's thread.
        """
        if self._closing or self._task is None:
            raise ShuttingDownError("the server is shutting down; retry on another instance")
        if not images:
            raise ValueError("no images to caption")
        if self.queued_images + len(images) > self.max_queue:
            raise QueueFullError(
                f"the caption queue is full ({self.queued_images} of {self.max_queue} images "
                "waiting); retry later",
                self.retry_after(),
            )
        loop = asyncio.get_running_loop()
        job = Job(list(images), options, self.clock(), deadline, loop.create_future(), client)
        self._pending.append(job)
        assert self._wakeup is not None
        self._wakeup.set()
        return job.future

    async def caption(
        self, images: list[Any], options: CaptionOptions, *, timeout: float, client: str = ""
    ) -> list[Caption]:
        """Submit and wait, with a deadline ``timeout`` seconds from now (DeadlineError after)."""
        deadline = self.clock() + timeout
        future = self.submit(images, options, deadline=deadline, client=client)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError as exc:
            raise DeadlineError(
                f"no result within the {timeout:g} s request deadline; the server is busy, "
                "retry later or send fewer images per request"
            ) from exc

    # -- the loop ------------------------------------------------------------
    async def _loop(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            # A job whose caller gave up (deadline, disconnect) is dropped unrun.
            self._pending = [job for job in self._pending if not job.future.done()]
            if not self._pending and self._closing:
                return
            now = self.clock()
            # Draining: run what is queued without waiting for more.
            plan = plan_batch(
                self._pending,
                now,
                max_batch_size=self.max_batch_size,
                max_wait=0.0 if self._closing else self.max_wait,
                incoming=0 if self._closing else self.incoming,
                max_hold=self.max_hold,
            )
            for i in plan.expired:
                _fail(
                    self._pending[i].future,
                    DeadlineError("the request deadline passed while queued"),
                )
            if not plan.batch:
                self._pending = [j for k, j in enumerate(self._pending) if k not in plan.expired]
                self._wakeup.clear()
                timeout = None if math.isinf(plan.wait) else plan.wait
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
                continue
            taken = set(plan.batch) | set(plan.expired)
            jobs = [self._pending[i] for i in plan.batch]
            self._pending = [j for k, j in enumerate(self._pending) if k not in taken]
            await self._run(loop, jobs)

    async def _run(self, loop: asyncio.AbstractEventLoop, jobs: list[Job]) -> None:
        images = [image for job in jobs for image in job.images]
        options = jobs[0].options
        self._running_images = len(images)
        started = self.clock()
        try:
            results = await loop.run_in_executor(self._executor, self.run_batch, images, options)
            if len(results) != len(images):
                raise BackendError(
                    f"the captioner returned {len(results)} results for {len(images)} images"
                )
        except Exception as exc:  # every job of the batch gets the error; the loop goes on
            for job in jobs:
                _fail(job.future, exc)
            return
        finally:
            self._running_images = 0
        seconds = self.clock() - started
        self.stats.batches += 1
        self.stats.images += len(images)
        self.stats.recent.append((self.clock(), len(images), seconds))
        if self.observe is not None:
            self.observe(len(images), seconds)
        start = 0
        for job in jobs:
            part = results[start : start + job.size]
            start += job.size
            if not job.future.done():
                job.future.set_result(part)


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
