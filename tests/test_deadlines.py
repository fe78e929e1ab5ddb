"""web/deadlines.py: blocks bounded as under asyncio.timeout_at, on one loop timer."""

from __future__ import annotations

import asyncio
from unittest import mock

import pytest

from gateway.web.deadlines import Deadlines


async def test_a_block_past_its_deadline_raises_timeout_and_the_task_goes_on() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError), deadlines.at(loop, loop.time() + 0.05):
        await asyncio.Event().wait()  # never set
    assert 0.05 <= loop.time() - started < 1.0
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # uncancelled: later awaits work
    await asyncio.sleep(0)


async def test_a_block_that_ends_in_time_is_left_alone() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    with deadlines.at(loop, loop.time() + 0.05) as deadline:
        await asyncio.sleep(0)
    assert deadline.closed and not deadline.expired
    await asyncio.sleep(0.1)  # its time passes: nothing is cancelled
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_deadline_already_past_expires_at_the_first_wait() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError), deadlines.at(loop, loop.time() - 1):
        await asyncio.sleep(10)


@pytest.mark.parametrize("ours", [True, False])
async def test_a_cancellation_from_elsewhere_is_not_turned_into_a_timeout(ours: bool) -> None:
    """As under asyncio.timeout_at (ours=False: the reference)."""
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    when = loop.time() + 0.05

    async def bounded() -> None:
        if ours:
            with deadlines.at(loop, when):
                await asyncio.sleep(10)
        else:
            async with asyncio.timeout_at(when):
                await asyncio.sleep(10)

    task = asyncio.create_task(bounded())
    await asyncio.sleep(0)
    # the owner cancels it in the same turn of the loop as the deadline passes, just after
    loop.call_at(when, task.cancel)
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_many_blocks_share_one_timer_and_each_expires_at_its_own_time() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    with mock.patch.object(loop, "call_at", wraps=loop.call_at) as call_at:
        now = loop.time()
        for _ in range(200):  # quick blocks: one timer, armed once
            with deadlines.at(loop, loop.time() + 5):
                await asyncio.sleep(0)
        queue = deadlines._queue
        armed = [c for c in call_at.call_args_list if getattr(c.args[1], "__self__", 0) is queue]
        assert len(armed) == 1

        ended: dict[str, float] = {}

        async def bounded(name: str, seconds: float) -> None:
            try:
                with deadlines.at(loop, now + seconds):
                    await asyncio.sleep(10)
            except TimeoutError:
                ended[name] = loop.time() - now

        # a later deadline first, then an earlier one: the timer is moved earlier
        await asyncio.gather(bounded("late", 0.3), bounded("early", 0.1))
    assert 0.1 <= ended["early"] < 0.3 <= ended["late"] < 1.5


async def test_closed_deadlines_behind_an_open_one_are_dropped() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    release = asyncio.Event()

    async def held() -> None:
        with deadlines.at(loop, loop.time() + 60):
            await release.wait()

    holder = asyncio.create_task(held())
    await asyncio.sleep(0)
    for _ in range(5000):
        with deadlines.at(loop, loop.time() + 60):
            pass
    queue = deadlines._queue
    assert queue is not None and queue.open == 1
    assert len(queue.heap) <= 2 * queue.open + 64 + 1
    release.set()
    await holder


def test_each_event_loop_has_its_own_timer() -> None:
    deadlines = Deadlines()

    async def expires() -> bool:
        loop = asyncio.get_running_loop()
        try:
            with deadlines.at(loop, loop.time() + 0.02):
                await asyncio.sleep(5)
        except TimeoutError:
            return True
        return False

    assert asyncio.run(expires())
    assert asyncio.run(expires())
