"""Timeouts that cost a queue entry each instead of an event-loop timer each.

`asyncio.timeout` arms a loop timer when entered and cancels it when left, and every call
of an aggregation is bounded by one or two (its per-try timeout, the endpoint deadline). A
`Timeouts` keeps the deadlines of one kind of use (a policy's per-try timeout, an endpoint's
deadline) with one loop timer, armed for the earliest: entering queues an entry, leaving
marks it done, and a done entry is dropped when it is the earliest (at the next `enter`, or
by the timer). Deadlines of one kind mostly come in the order they end (the same length
from now): those go to the back of a queue, the rest into a heap, and the timer is re-armed
about once per timeout length, not once per use. `python -m benchmarks.timers` (256 tasks
at once under uvloop, five runs on a shared 2-core machine): asyncio.timeout +7.9 to +11.6
us a use, Timeouts +1.8 to +3.5 us.

The semantics are `asyncio.timeout`'s: when the deadline passes, the task that entered is
cancelled; the `CancelledError` that comes back out is the timeout's (`leave` says so, the
caller raises its own error) unless the task was also cancelled by someone else, which
`Task.cancelling`/`uncancel` tell apart exactly as `asyncio.Timeout` does. So timeouts nest
with each other and with `asyncio.timeout` (the outermost that expired wins).

Bound to one event loop at a time: a `Timeouts` serves the loop of its first `enter`, and
moves to another once nothing of the first is left running in it (tests run one loop after
another); entered from a second loop while the first still has timeouts running, it keeps
the second loop's apart (a `Timeouts` of its own per such loop).
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections import deque
from heapq import heappop, heappush
from types import TracebackType


class Deadline:
    """One entered timeout: the task it cancels, until `Timeouts.leave` (task None then)."""

    __slots__ = ("cancelling", "expired", "task", "when")

    def __init__(self, when: float, task: asyncio.Task[object], cancelling: int) -> None:
        self.when = when
        self.task: asyncio.Task[object] | None = task
        self.cancelling = cancelling
        self.expired = False


class Timeouts:
    """Deadlines in loop time (`loop.time()`), one loop timer for all of them.

    Use::

        entry = timeouts.enter(loop.time() + seconds)
        try:
            return await work()
        except asyncio.CancelledError:
            if timeouts.leave(entry, cancelled=True):
                raise TimeoutError from None  # or the caller's own error
            raise
        finally:
            timeouts.leave(entry)  # a no-op after the one above
    """

    __slots__ = ("_armed", "_elsewhere", "_handle", "_heap", "_loop", "_order", "_queue")

    def __init__(self) -> None:
        self._queue: deque[Deadline] = deque()  # in the order they end
        self._heap: list[tuple[float, int, Deadline]] = []  # entered before one ending later
        self._order = itertools.count()  # ties end in the order they were entered
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._armed: float | None = None  # when the handle fires
        # other loops', while this one's loop still has timeouts running
        self._elsewhere: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Timeouts] | None
        self._elsewhere = None

    def __repr__(self) -> str:
        kept = [*self._queue, *(entry for _, _, entry in self._heap)]
        live = sum(1 for entry in kept if entry.task is not None)
        return f"<Timeouts [{live} running, {len(kept)} kept]>"

    def after(self, seconds: float) -> Deadline:
        """`enter(loop.time() + seconds)`."""
        loop = asyncio.get_running_loop()
        return self._enter(loop, loop.time() + seconds)

    def scope(self, when: float) -> Scope:
        """`asyncio.timeout_at(when)` as a plain `with` block: the block's awaits are
        cancelled at `when` (loop time), and a TimeoutError comes out of it."""
        return Scope(self.enter(when))

    def within(self, seconds: float) -> Scope:
        """`scope(loop.time() + seconds)`."""
        return Scope(self.after(seconds))

    def enter(self, when: float) -> Deadline:
        """Cancel the current task at `when` (loop time), unless left before."""
        return self._enter(asyncio.get_running_loop(), when)

    def _enter(self, loop: asyncio.AbstractEventLoop, when: float) -> Deadline:
        if loop is not self._loop and not self._bind(loop):
            return self._for(loop)._enter(loop, when)
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a timeout is entered inside a task")
        entry = Deadline(when, task, task.cancelling())
        queue = self._queue
        while queue and queue[0].task is None:  # left already: nothing to cancel
            queue.popleft()
        if not queue or queue[-1].when <= when:
            queue.append(entry)
        else:
            heap = self._heap
            while heap and heap[0][2].task is None:
                heappop(heap)
            heappush(heap, (when, next(self._order), entry))
        armed = self._armed
        if armed is None or when < armed:
            if self._handle is not None:
                self._handle.cancel()
            self._armed = when
            self._handle = loop.call_at(when, self._expire)
        return entry

    @staticmethod
    def leave(entry: Deadline, cancelled: bool = False) -> bool:
        """End `entry` (`cancelled`: with a CancelledError coming out). True: that error is
        the timeout's, to be replaced by a timeout error; False: let it (or the result) be.
        Called again for an entry already left, it does nothing (False)."""
        task = entry.task
        if task is None:
            return False
        entry.task = None
        if not entry.expired:
            return False
        # asyncio.Timeout.__aexit__: the cancel was ours unless another one came since
        return task.uncancel() <= entry.cancelling and cancelled

    def _expire(self) -> None:
        loop = self._loop
        assert loop is not None and self._armed is not None
        # what the timer was armed for expires even if the loop fires it a little early
        # (uvloop counts in milliseconds), as asyncio.Timeout's handle would
        limit = max(loop.time(), self._armed)
        self._handle = self._armed = None
        queue, heap = self._queue, self._heap
        while queue:
            entry = queue[0]
            if entry.task is not None:
                if entry.when > limit:
                    break
                entry.expired = True
                entry.task.cancel()
            queue.popleft()
        while heap:
            when, _, entry = heap[0]
            if entry.task is not None:
                if when > limit:
                    break
                entry.expired = True
                entry.task.cancel()
            heappop(heap)
        if queue or heap:
            firsts = ([queue[0].when] if queue else []) + ([heap[0][0]] if heap else [])
            when = self._armed = min(firsts)
            self._handle = loop.call_at(when, self._expire)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Serve `loop` from now on, if the loop served so far has nothing running here."""
        old = self._loop
        if old is not None and not old.is_closed():
            kept = [*self._queue, *(entry for _, _, entry in self._heap)]
            if any(entry.task is not None for entry in kept):
                return False
            if self._handle is not None:
                self._handle.cancel()
        self._queue.clear()
        self._heap.clear()
        self._handle = self._armed = None
        self._loop = loop
        return True

    def _for(self, loop: asyncio.AbstractEventLoop) -> Timeouts:
        """The timeouts of another loop than the one served (kept while the loop lives)."""
        if self._elsewhere is None:
            self._elsewhere = weakref.WeakKeyDictionary()
        other = self._elsewhere.get(loop)
        if other is None:
            other = self._elsewhere[loop] = Timeouts()
        return other


class Scope:
    """A `with` block bounded by one `Timeouts` entry (`Timeouts.scope`)."""

    __slots__ = ("entry",)

    def __init__(self, entry: Deadline) -> None:
        self.entry = entry

    def __enter__(self) -> Scope:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if Timeouts.leave(self.entry, cancelled=exc_type is asyncio.CancelledError):
            raise TimeoutError from exc
