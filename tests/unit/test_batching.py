"""The batching core of coalescing, composite calls and group commit: full batches at once, a linger after
the first, a busy batcher sends full batches, and each caller gets its own answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from twoway.kit.batching import Batcher


class _Recorder:
    def __init__(self, delay: float = 0.0, fail: BaseException | None = None) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.fail = fail

    async def __call__(self, items: list[int]) -> list[Any]:
        self.batches.append(items)
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return [ValueError(i) if i < 0 else i * 10 for i in items]


async def test_without_linger_one_moment_is_one_batch_split_by_size() -> None:
    flush = _Recorder()
    batcher: Batcher[int, int] = Batcher(flush, size=3)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(7))) == [i * 10 for i in range(7)]
    assert flush.batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_partial_batch_lingers_and_a_full_one_goes_at_once() -> None:
    flush = _Recorder()
    batcher: Batcher[int, int] = Batcher(flush, size=4, linger=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.05)
    assert flush.batches == []  # still lingering for company
    rest = asyncio.gather(*(batcher.submit(i) for i in (2, 3, 4)))
    assert [await first, *await rest] == [10, 20, 30, 40]
    assert flush.batches == [[1, 2, 3, 4]] and loop.time() - started < 0.15
    assert await batcher.submit_all([5, 6]) == [50, 60]
    assert flush.batches[-1] == [5, 6] and loop.time() - started >= 0.2


async def test_while_every_slot_is_busy_the_queue_grows_into_full_batches() -> None:
    flush = _Recorder(delay=0.05)
    batcher: Batcher[int, int] = Batcher(flush, size=5, max_in_flight=1)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.01)  # the first batch is out
    later = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 8)]
    await asyncio.gather(first, *later)
    assert flush.batches == [[0], [1, 2, 3, 4, 5], [6, 7]]
    await batcher.close()
    assert batcher.in_flight == 0


async def test_errors_reach_their_own_caller_or_the_whole_batch() -> None:
    own: Batcher[int, int] = Batcher(_Recorder(), size=10, raise_errors=True)
    answers = await asyncio.gather(own.submit(1), own.submit(-1), return_exceptions=True)
    assert answers[0] == 10 and isinstance(answers[1], ValueError)
    as_values: Batcher[int, Any] = Batcher(_Recorder(), size=10)
    assert isinstance((await asyncio.gather(as_values.submit(-2)))[0], ValueError)
    failing: Batcher[int, int] = Batcher(_Recorder(fail=RuntimeError("down")), size=10)
    answers = await asyncio.gather(failing.submit(1), failing.submit(2), return_exceptions=True)
    assert [str(a) for a in answers] == ["down", "down"]


async def test_a_caller_that_gave_up_is_left_out_when_asked() -> None:
    flush = _Recorder()
    batcher: Batcher[int, int] = Batcher(flush, size=10, linger=0.05, drop_cancelled=True)
    gone = asyncio.ensure_future(batcher.submit(1))
    kept = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    gone.cancel()
    assert await kept == 20
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert flush.batches == [[2]]
