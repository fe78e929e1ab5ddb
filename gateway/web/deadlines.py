"""Deadlines of many blocks on one timer: what `asyncio.timeout_at` does for one block,
without a timer of the event loop armed and cancelled per block.

`asyncio.timeout_at` costs ~12 us a block (py-spy, a passthrough with its upstream call
stubbed: its Timeout object, the current task, a loop timer armed and cancelled). Here the
open deadlines wait in a heap, and one loop timer waits for the earliest: when it fires, the
blocks past their deadline are cancelled, those already closed are dropped, and the timer
waits for the next open one. Closing a block only marks it closed. With deadlines a fixed
time after each start (one endpoint's exchanges), the timer fires about once per that time,
not once per block.

A block past its deadline ends as it would under `asyncio.timeout_at`: its task is
cancelled, and the CancelledError leaving the block becomes a TimeoutError, unless the task
was also cancelled from elsewhere (then the CancelledError goes on).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from types import TracebackType


class Deadline:
    """One block's deadline: a (synchronous) context manager around the block's awaits."""

    __slots__ = ("_cancelling", "_queue", "_task", "closed", "expired", "when")

    def __init__(self, queue: _Queue, when: float, task: asyncio.Task[object]) -> None:
        self._queue = queue
        self._task = task
        self._cancelling = task.cancelling()
        self.when = when
        self.closed = False
        self.expired = False

    def __enter__(self) -> Deadline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.closed:
            self.closed = True
            self._queue.open -= 1
        # as asyncio.Timeout.__aexit__ decides
        if (
            self.expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc

    def _expire(self) -> None:
        self.closed = True
        self.expired = True
        self._queue.open -= 1
        self._task.cancel()


class _Queue:
    """The deadlines of one event loop, earliest first (closed ones are dropped lazily)."""

    __slots__ = ("armed", "handle", "heap", "loop", "open", "order")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.heap: list[tuple[float, int, Deadline]] = []
        self.order = itertools.count()  # ties in time: first come, first out
        self.open = 0
        self.handle: asyncio.TimerHandle | None = None
        self.armed = math.inf  # when the handle fires

    def add(self, deadline: Deadline) -> None:
        heap = self.heap
        heapq.heappush(heap, (deadline.when, next(self.order), deadline))
        self.open += 1
        if deadline.when < self.armed:
            self._arm(deadline.when)
        elif len(heap) > 2 * self.open + 64:
            # a block held open long keeps the closed ones after it: drop them, at a cost
            # of one pass per doubling (never more than twice the open ones are kept)
            self.heap = [entry for entry in heap if not entry[2].closed]
            heapq.heapify(self.heap)

    def _arm(self, when: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.handle = self.loop.call_at(when, self.fire)
        self.armed = when

    def fire(self) -> None:
        self.handle = None
        self.armed = math.inf
        now = self.loop.time()
        heap = self.heap
        while heap:
            when, _, first = heap[0]
            if first.closed:
                heapq.heappop(heap)
            elif when <= now:
                heapq.heappop(heap)
                first._expire()
            else:
                self._arm(when)
                return


class Deadlines:
    """The deadlines of an endpoint's blocks, on one timer per event loop.

    `deadlines.at(loop, when)` is the current task's deadline at `when` (the running
    `loop`'s time), used as `with deadline:` around the awaits it bounds."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: _Queue | None = None

    def at(self, loop: asyncio.AbstractEventLoop, when: float) -> Deadline:
        queue = self._queue
        if queue is None or queue.loop is not loop:
            # a first block, or one on another loop (tests run several): a queue of its own
            queue = self._queue = _Queue(loop)
        task = asyncio.current_task(loop)
        assert task is not None, "a deadline bounds a task's awaits"
        deadline = Deadline(queue, when, task)
        queue.add(deadline)
        return deadline
