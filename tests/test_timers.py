"""`gateway.timers.Timeouts` keeps `asyncio.timeout`'s semantics: the same table run through
both, plus what is its own (one loop timer, entries dropped once left, one loop at a time).

Deadlines already past (`loop.time()`) expire on the loop's next turn: no waiting on time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from gateway.timers import Timeouts

Bound = Callable[[float], AbstractAsyncContextManager[object]]


def heap_bound(timeouts: Timeouts) -> Bound:
    """`Timeouts` in the shape of `asyncio.timeout_at`, as the policies use it."""

    @asynccontextmanager
    async def bound(when: float) -> AsyncIterator[None]:
        entry = timeouts.enter(when)
        try:
            yield
        except asyncio.CancelledError:
            if timeouts.leave(entry, cancelled=True):
                raise TimeoutError from None
            raise
        finally:
            timeouts.leave(entry)

    return bound


def scope_bound(timeouts: Timeouts) -> Bound:
    """`Timeouts.scope`, the plain `with` block the passthrough uses."""

    @asynccontextmanager
    async def bound(when: float) -> AsyncIterator[None]:
        with timeouts.scope(when):
            yield

    return bound


def both() -> dict[str, Bound]:
    return {
        "asyncio": asyncio.timeout_at,
        "Timeouts": heap_bound(Timeouts()),
        "scope": scope_bound(Timeouts()),
    }


FORMS = ("asyncio", "Timeouts", "scope")


@pytest.mark.parametrize("form", FORMS)
async def test_a_deadline_that_passes_cancels_and_says_timeout(form: str) -> None:
    bound = both()[form]
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        async with bound(loop.time()):
            await asyncio.Event().wait()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("form", FORMS)
async def test_work_done_in_time_is_not_cancelled_later(form: str) -> None:
    bound = both()[form]
    loop = asyncio.get_running_loop()
    async with bound(loop.time()):  # expires on the loop's next turn: left before it
        value = 1
    for _ in range(3):  # turns of the loop, the timer's among them
        await asyncio.sleep(0)
    assert value == 1 and asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("expired", [False, True])
async def test_someone_elses_cancel_passes_through_expired_or_not(form: str, expired: bool) -> None:
    bound = both()[form]
    loop = asyncio.get_running_loop()
    inside = asyncio.Event()

    async def work() -> None:
        async with bound(loop.time() if expired else loop.time() + 60):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(work())
    await inside.wait()
    task.cancel()  # in the same turn as the expiry, when it expires
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    ("inner_first", "winner"),
    [(True, "inner"), (False, "outer"), (None, "outer")],  # None: both at once
)
async def test_nested_the_first_to_pass_wins_and_at_once_the_outer(
    form: str, inner_first: bool | None, winner: str
) -> None:
    """What execute and the policies rely on: the per-try timeout inside the deadline."""
    forms = both()
    outer, inner = forms[form], heap_bound(Timeouts())
    loop = asyncio.get_running_loop()
    now = loop.time()
    soon, later = now, now + 60
    inner_when = soon if inner_first in (True, None) else later
    outer_when = soon if inner_first in (False, None) else later
    if inner_first is None:
        outer_when = inner_when = now - 1  # both expire in the same turn
    seen = ""
    try:
        async with outer(outer_when):
            try:
                async with inner(inner_when):
                    await asyncio.Event().wait()
            except TimeoutError:
                seen = "inner"
    except TimeoutError:
        seen = "outer"
    assert seen == winner


async def test_one_loop_timer_serves_deadlines_that_end_in_order() -> None:
    timeouts = Timeouts()
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        armed.append(when)
        return call_at(when, callback)

    loop.call_at = counting_call_at  # type: ignore[method-assign,assignment]
    try:
        entries = [timeouts.enter(loop.time() + 60 + i) for i in range(100)]
        assert len(armed) == 1
        earlier = timeouts.enter(loop.time() + 1)  # one that ends first re-arms
        assert len(armed) == 2 and armed[-1] == earlier.when
    finally:
        loop.call_at = call_at  # type: ignore[method-assign]
    for entry in [*entries, earlier]:
        assert not Timeouts.leave(entry)


async def test_entries_left_are_dropped_and_a_late_one_still_expires() -> None:
    timeouts = Timeouts()
    bound = heap_bound(timeouts)
    loop = asyncio.get_running_loop()
    for _ in range(1000):
        async with bound(loop.time() + 60):
            pass
    assert len(timeouts._queue) <= 1 and not timeouts._heap
    with pytest.raises(TimeoutError):
        async with bound(loop.time()):
            await asyncio.Event().wait()


async def test_a_deadline_entered_before_a_sooner_one_expires_after_it() -> None:
    timeouts = Timeouts()
    bound = heap_bound(timeouts)
    loop = asyncio.get_running_loop()
    order: list[str] = []

    async def wait(name: str, when: float) -> None:
        try:
            async with bound(when):
                await asyncio.Event().wait()
        except TimeoutError:
            order.append(name)

    now = loop.time()
    await asyncio.gather(
        wait("late", now + 0.04), wait("soon", now + 0.01), wait("latest", now + 0.05)
    )
    assert order == ["soon", "late", "latest"]
    assert not timeouts._queue and not timeouts._heap


def test_timeouts_move_to_the_next_event_loop_once_the_first_is_done() -> None:
    timeouts = Timeouts()
    bound = heap_bound(timeouts)

    async def expires() -> bool:
        try:
            async with bound(asyncio.get_running_loop().time()):
                await asyncio.Event().wait()
        except TimeoutError:
            return True
        return False

    assert asyncio.run(expires()) and asyncio.run(expires())


async def test_entering_outside_a_task_is_refused() -> None:
    timeouts = Timeouts()
    loop = asyncio.get_running_loop()
    refused: list[BaseException] = []

    def callback() -> None:
        try:
            timeouts.enter(loop.time())
        except RuntimeError as exc:
            refused.append(exc)

    loop.call_soon(callback)
    await asyncio.sleep(0)
    assert len(refused) == 1


def test_a_second_loop_gets_timeouts_of_its_own_while_the_first_has_some_running() -> None:
    """A Timeouts used by two loops at once (two threads) serves each with its own timer."""
    import threading

    timeouts = Timeouts()
    bound = heap_bound(timeouts)
    entered = threading.Event()
    first_loop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
    results: dict[str, bool] = {}

    async def holds() -> None:
        loop = asyncio.get_running_loop()
        release = asyncio.Event()
        async with bound(loop.time() + 60):
            first_loop.append((loop, release))
            entered.set()
            await release.wait()
        results["first"] = True

    async def expires() -> None:
        try:
            async with bound(asyncio.get_running_loop().time()):
                await asyncio.Event().wait()
        except TimeoutError:
            results["second"] = True

    first = threading.Thread(target=asyncio.run, args=(holds(),))
    first.start()
    try:
        assert entered.wait(10)
        asyncio.run(expires())  # the first loop still runs its timeout
    finally:
        if first_loop:
            loop, release = first_loop[0]
            loop.call_soon_threadsafe(release.set)
        first.join(10)
    assert results == {"first": True, "second": True}
