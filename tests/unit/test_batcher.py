"""The batching policy (a pure function) and the asyncio micro-batcher, without HTTP or a model."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass

import pytest

from blipcap.errors import BackendError
from blipcap.options import CaptionOptions
from blipcap.results import Caption
from blipcap.server.batcher import (
    DeadlineError,
    MicroBatcher,
    QueueFullError,
    ShuttingDownError,
    plan_batch,
)

GREEDY = CaptionOptions()
BEAM = CaptionOptions(num_beams=3)


@dataclass
class P:
    """A pending job as the planner sees it."""

    size: int = 1
    arrival: float = 0.0
    deadline: float = 100.0
    options: CaptionOptions = GREEDY


def plan(pending, now, max_batch_size=4, max_wait=0.05, incoming=0, max_hold=None):
    return plan_batch(
        pending,
        now,
        max_batch_size=max_batch_size,
        max_wait=max_wait,
        incoming=incoming,
        max_hold=max_hold,
    )


# --------------------------------------------------------------------------- plan_batch
def test_empty_queue_waits_forever():
    p = plan([], now=0.0)
    assert (p.expired, p.batch) == ([], [])
    assert math.isinf(p.wait)


def test_young_partial_batch_waits_for_the_rest_of_max_wait():
    p = plan([P(arrival=0.0), P(arrival=0.01)], now=0.02)
    assert p.batch == []
    assert p.wait == pytest.approx(0.03)


def test_partial_batch_runs_once_the_oldest_has_waited_max_wait():
    p = plan([P(arrival=0.0), P(arrival=0.04)], now=0.05)
    assert p.batch == [0, 1]


def test_full_batch_runs_at_once():
    p = plan([P(arrival=0.0, size=2), P(arrival=0.0, size=2), P(arrival=0.0)], now=0.0)
    assert p.batch == [0, 1]  # 4 images: full; the third job waits for the next batch


def test_next_job_that_does_not_fit_makes_the_batch_ready():
    # 3 images queued, next job has 2: waiting cannot grow this batch.
    p = plan([P(size=3), P(size=2)], now=0.0)
    assert p.batch == [0]


def test_oversized_job_runs_alone():
    p = plan([P(size=10), P(size=1)], now=0.0)
    assert p.batch == [0]


def test_only_jobs_with_the_head_options_join_in_arrival_order():
    pending = [P(options=BEAM), P(), P(options=BEAM), P(), P(options=BEAM)]
    p = plan(pending, now=1.0)
    assert p.batch == [0, 2, 4]


def test_expired_jobs_are_reported_and_never_batched():
    pending = [P(deadline=0.5), P(deadline=2.0), P(deadline=0.9)]
    p = plan(pending, now=1.0)
    assert p.expired == [0, 2]
    assert p.batch == [1]


def test_wait_never_outlasts_the_earliest_deadline():
    p = plan([P(arrival=0.0, deadline=0.02)], now=0.0, max_wait=0.05)
    assert p.batch == []
    assert p.wait == pytest.approx(0.02)


def test_zero_max_wait_runs_immediately():
    assert plan([P()], now=0.0, max_wait=0.0).batch == [0]


def test_images_being_decoded_extend_the_wait_up_to_max_hold():
    pending = [P(arrival=0.0), P(arrival=0.01)]
    # Past max_wait, but 3 more images are being decoded: hold on (default hold 5 x 0.05).
    p = plan(pending, now=0.06, incoming=3)
    assert p.batch == [] and p.wait == pytest.approx(0.19)
    assert plan(pending, now=0.25, incoming=3).batch == [0, 1]  # the hold is over
    assert plan(pending, now=0.06, incoming=0).batch == [0, 1]  # nothing on its way
    assert plan(pending, now=0.06, incoming=3, max_hold=0.1).wait == pytest.approx(0.04)


def test_full_batch_does_not_wait_for_incoming_images():
    assert plan([P(size=4)], now=0.0, incoming=5).batch == [0]


def test_invalid_batch_size():
    with pytest.raises(ValueError, match="max_batch_size"):
        plan([P()], now=0.0, max_batch_size=0)


# --------------------------------------------------------------------------- MicroBatcher
class FakeModel:
    """Captions 'img-N' for input N; records each batch; optional delay and failure."""

    def __init__(self, delay: float = 0.0, fail: bool = False):
        self.delay = delay
        self.fail = fail
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()

    def __call__(self, images, options):
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(images))
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise BackendError("the backend fell over")
        return [Caption(path=None, caption=f"img-{i}") for i in images]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_one_batch_and_get_their_own_results():
    model = FakeModel()

    async def main():
        b = MicroBatcher(model, max_batch_size=8, max_wait=0.05, max_queue=16)
        await b.start()
        try:
            results = await asyncio.gather(
                b.caption([1, 2], GREEDY, timeout=5),
                b.caption([3], GREEDY, timeout=5),
                b.caption([4, 5, 6], GREEDY, timeout=5),
            )
        finally:
            await b.stop()
        return results

    results = run(main())
    assert [[r.caption for r in rs] for rs in results] == [
        ["img-1", "img-2"],
        ["img-3"],
        ["img-4", "img-5", "img-6"],
    ]
    assert model.batches == [[1, 2, 3, 4, 5, 6]]
    assert len(model.threads) == 1 and next(iter(model.threads)).startswith("blipcap-model")


def test_different_options_run_in_separate_batches():
    model = FakeModel()
    seen = []

    def run_batch(images, options):
        seen.append((list(images), options.num_beams))
        return model(images, options)

    async def main():
        b = MicroBatcher(run_batch, max_batch_size=8, max_wait=0.02, max_queue=16)
        await b.start()
        try:
            await asyncio.gather(
                b.caption([1], GREEDY, timeout=5),
                b.caption([2], BEAM, timeout=5),
                b.caption([3], GREEDY, timeout=5),
            )
        finally:
            await b.stop()

    run(main())
    assert seen == [([1, 3], 1), ([2], 3)]


async def until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.005)


def test_requests_arriving_during_a_batch_form_the_next_batch():
    model = FakeModel(delay=0.3)

    async def main():
        b = MicroBatcher(model, max_batch_size=8, max_wait=0.0, max_queue=16)
        await b.start()
        try:
            first = asyncio.create_task(b.caption([1], GREEDY, timeout=5))
            await until(lambda: b.running_images == 1)  # the first batch is running now
            rest = [asyncio.create_task(b.caption([i], GREEDY, timeout=5)) for i in (2, 3, 4)]
            await asyncio.gather(first, *rest)
            assert b.stats.batches == 2
        finally:
            await b.stop()

    run(main())
    assert model.batches == [[1], [2, 3, 4]]


def test_full_queue_refuses_with_retry_after():
    model = FakeModel(delay=0.3)

    async def main():
        b = MicroBatcher(model, max_batch_size=2, max_wait=0.0, max_queue=3)
        await b.start()
        try:
            running = asyncio.create_task(b.caption([1, 2], GREEDY, timeout=5))
            await until(lambda: b.running_images == 2)  # taken by the model: queue empty again
            queued = asyncio.create_task(b.caption([3, 4, 5], GREEDY, timeout=5))
            await asyncio.sleep(0)
            assert b.queued_images == 3
            with pytest.raises(QueueFullError, match="queue is full") as info:
                b.submit([6], GREEDY, deadline=time.monotonic() + 5)
            assert info.value.retry_after >= 1
            await asyncio.gather(running, queued)
        finally:
            await b.stop()

    run(main())


def test_deadline_passes_while_queued():
    model = FakeModel(delay=1.0)

    async def main():
        b = MicroBatcher(model, max_batch_size=1, max_wait=0.0, max_queue=8)
        await b.start()
        try:
            slow = asyncio.create_task(b.caption([1], GREEDY, timeout=5))
            await until(lambda: b.running_images == 1)
            started = time.monotonic()
            with pytest.raises(DeadlineError, match="deadline"):
                await b.caption([2], GREEDY, timeout=0.1)
            assert time.monotonic() - started < 0.6  # answered at the deadline, not after the batch
            await slow
        finally:
            await b.stop()

    run(main())
    assert model.batches == [[1]]  # the expired job never reached the model


def test_model_failure_fails_only_that_batch():
    calls = []

    def run_batch(images, options):
        calls.append(list(images))
        if len(calls) == 1:
            raise BackendError("the backend fell over")
        return [Caption(path=None, caption=f"img-{i}") for i in images]

    async def main():
        b = MicroBatcher(run_batch, max_batch_size=4, max_wait=0.0, max_queue=8)
        await b.start()
        try:
            with pytest.raises(BackendError, match="fell over"):
                await b.caption([1], GREEDY, timeout=5)
            ok = await b.caption([2], GREEDY, timeout=5)
        finally:
            await b.stop()
        return ok

    assert [r.caption for r in run(main())] == ["img-2"]


def test_wrong_result_count_is_an_error():
    async def main():
        b = MicroBatcher(lambda images, options: [], max_batch_size=4, max_wait=0.0)
        await b.start()
        try:
            with pytest.raises(BackendError, match="returned 0 results for 2 images"):
                await b.caption([1, 2], GREEDY, timeout=5)
        finally:
            await b.stop()

    run(main())


def test_stop_drains_queued_work_then_refuses_new_work():
    model = FakeModel(delay=0.1)

    async def main():
        b = MicroBatcher(model, max_batch_size=1, max_wait=0.0, max_queue=8)
        await b.start()
        tasks = [asyncio.create_task(b.caption([i], GREEDY, timeout=5)) for i in range(3)]
        await asyncio.sleep(0.01)
        await b.stop()
        results = await asyncio.gather(*tasks)
        with pytest.raises(ShuttingDownError):
            b.submit([9], GREEDY, deadline=time.monotonic() + 5)
        return results

    results = run(main())
    assert [rs[0].caption for rs in results] == ["img-0", "img-1", "img-2"]


def test_batch_waits_for_requests_still_decoding():
    model = FakeModel()

    async def main():
        b = MicroBatcher(model, max_batch_size=8, max_wait=0.01, max_hold=1.0, max_queue=16)
        await b.start()
        try:
            first = asyncio.create_task(b.caption([1], GREEDY, timeout=5))
            with b.expecting(2):
                await asyncio.sleep(0.1)  # decoding: longer than max_wait, shorter than max_hold
            # Submitted right after decoding, with no await in between (as the app does).
            second = b.submit([2, 3], GREEDY, deadline=time.monotonic() + 5)
            await asyncio.gather(first, second)
        finally:
            await b.stop()

    run(main())
    assert model.batches == [[1, 2, 3]]


def test_throughput_stats_and_observer():
    observed = []

    async def main():
        b = MicroBatcher(
            FakeModel(delay=0.05),
            max_batch_size=4,
            max_wait=0.01,
            observe=lambda n, s: observed.append(n),
        )
        await b.start()
        try:
            await asyncio.gather(*(b.caption([i], GREEDY, timeout=5) for i in range(4)))
            rate = b.stats.images_per_second(time.monotonic())
        finally:
            await b.stop()
        return rate

    rate = run(main())
    assert observed == [4]
    assert 5 < rate <= 80  # 4 images in ~0.05 s of model time (more on a busy machine)
