"""The batcher and the forward-pass locks, with real threads (no worker needed)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from modelq.models.batching import Batcher, exclusive

pytestmark = pytest.mark.fast


class Overlap:
    """Counts how many calls are inside a block at once, and the most ever seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *_: Any) -> None:
        with self._lock:
            self.now -= 1


def at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return [f.result(timeout=60) for f in [pool.submit(run, call) for call in calls]]


def test_concurrent_callers_get_their_own_outputs_from_one_batch_at_a_time() -> None:
    # given a batcher whose forward pass records how many run at once and how the work is ragged
    batcher = Batcher(max_size=16, max_wait_ms=2)
    overlap = Overlap()
    gate = threading.Event()

    def forward(items: list[int]) -> list[int]:
        with overlap:
            gate.wait(0.002)  # a forward pass takes a little while, so callers pile up behind it
            return [item * 10 for item in items]

    rng = random.Random(5)
    requests = [[rng.randrange(1000) for _ in range(rng.randint(1, 5))] for _ in range(64)]

    # when 64 callers with 1-5 items each arrive at once
    answers = at_once([lambda items=items: batcher.call(items, forward) for items in requests])

    # then each gets its own outputs in order, batches never overlapped, and they were shared
    assert answers == [[item * 10 for item in items] for items in requests]
    assert overlap.most == 1
    assert batcher.stats.items == sum(len(items) for items in requests)
    assert batcher.stats.batches < len(requests)
    assert batcher.stats.largest <= 16


def test_a_batch_waits_until_full_when_idle() -> None:
    # given an idle batcher that may wait a long time for a batch of 8 to fill
    batcher = Batcher(max_size=8, max_wait_ms=60_000)
    sizes: list[int] = []

    def forward(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    # when 8 callers of one item arrive together, then the batch runs full, at once, in one pass
    assert at_once([lambda i=i: batcher.call([i], forward) for i in range(8)]) == [[i] for i in range(8)]
    assert sizes == [8]


def test_a_failing_batch_fails_its_callers_and_the_next_batch_still_runs() -> None:
    batcher = Batcher(max_size=4, max_wait_ms=1)

    def broken(_items: list[int]) -> list[int]:
        raise ValueError("forward pass failed")

    with pytest.raises(ValueError, match="forward pass failed"):
        batcher.call([1, 2], broken)
    assert batcher.call([3], lambda items: [i + 1 for i in items]) == [4]


def test_a_forward_pass_that_drops_outputs_is_an_error() -> None:
    batcher = Batcher(max_size=4, max_wait_ms=1)
    with pytest.raises(RuntimeError, match="a batch of 3 inputs returned 2 outputs"):
        batcher.call([1, 2, 3], lambda items: items[:2])


class FakeModel:
    """Stands in for a loaded model object: only its identity and its device matter to the lock."""

    def __init__(self, device: str) -> None:
        self.device = device


def test_exclusive_serialises_one_model_and_one_device_but_not_two_devices() -> None:
    # given two models on one device, and one on another; the passes on the two devices wait for each other
    first, second, elsewhere = FakeModel("cpu"), FakeModel("cpu"), FakeModel("cuda:1")
    cpu, everything = Overlap(), Overlap()
    cpu_ran, gpu_in = threading.Event(), threading.Event()

    def on_cpu(model: FakeModel) -> None:
        with exclusive(model), cpu, everything:
            gpu_in.wait(5)
            cpu_ran.set()

    def on_gpu() -> None:
        with exclusive(elsewhere), everything:
            gpu_in.set()
            cpu_ran.wait(5)

    # when each runs a forward pass at the same time
    at_once([lambda: on_cpu(first), lambda: on_cpu(second), lambda: on_cpu(first), on_gpu])

    # then passes on one device never overlap, and the other device's pass went on meanwhile
    assert cpu.most == 1
    assert everything.most == 2


def test_exclusive_polls_while_it_waits_and_stops_when_the_poll_raises() -> None:
    model = FakeModel("cpu")
    polls = 0

    def cancelled() -> None:
        nonlocal polls
        polls += 1
        raise KeyboardInterrupt  # stands in for TaskCancelled

    with exclusive(model):
        outcome: list[BaseException] = []

        def waiter() -> None:
            try:
                with exclusive(model, poll=cancelled, poll_seconds=0.01):
                    pass
            except BaseException as exc:  # noqa: BLE001
                outcome.append(exc)

        thread = threading.Thread(target=waiter)
        thread.start()
        thread.join(10)
    assert polls == 1 and isinstance(outcome[0], KeyboardInterrupt)


def test_token_groups_sort_by_length_and_keep_padding_within_the_budget() -> None:
    from modelq.models.batching import token_groups

    lengths = [5, 200, 7, 6, 120, 300, 5, 9]
    groups = token_groups(lengths, 64)
    # every index once, each group sorted short to long, each group's padded size within 64 (or alone)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    flat = [lengths[i] for g in groups for i in g]
    assert flat == sorted(flat)
    for group in groups:
        assert len(group) == 1 or max(lengths[i] for i in group) * len(group) <= 64
    assert [lengths[i] for i in groups[0]] == [5, 5, 6, 7, 9]  # the short texts share a pass
    assert token_groups([], 64) == []
