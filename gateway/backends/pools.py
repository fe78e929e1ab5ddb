"""Admission and accounting for the executors behind legacy (threads) and compute (processes).

An executor queues without bound, and a thread running a blocking call cannot be cancelled.
So each pool admits at most `workers + queue` calls and refuses the next one at once
(`Refused`, 503). A call keeps its slot until its work has *really* finished, not until its
caller stopped waiting: a hung legacy system can take its own pool, never more.

Counters change on the event loop (admission) and on worker or executor-manager threads
(completion), hence the lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from gateway.errors import Refused


@dataclass(slots=True, eq=False)
class PoolStats:
    """Live counters of one pool, read by /metrics and by `repr()`."""

    name: str
    workers: int
    capacity: int
    retry_after: int
    tracks_running: bool = True
    """Threads report when they start and stop; worker processes cannot."""
    admitted: int = 0
    """Calls submitted whose work has not finished: running plus queued."""
    running: int = 0
    """Calls a worker is executing now (threads count this themselves)."""
    refused: int = 0
    replaced: int = 0
    """Times a broken pool was replaced (compute only)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __repr__(self) -> str:
        return (
            f"<Pool {self.name} [{self.busy}/{self.workers} busy, {self.queued} queued, "
            f"{self.refused} refused]>"
        )

    @property
    def busy(self) -> int:
        """Workers occupied; for processes, estimated from the calls admitted."""
        return self.running if self.tracks_running else min(self.admitted, self.workers)

    @property
    def queued(self) -> int:
        return max(0, self.admitted - self.busy)

    def admit(self) -> None:
        """Take a slot, or raise `Refused` at once when every slot is taken."""
        with self._lock:
            if self.admitted >= self.capacity:
                self.refused += 1
                full = True
            else:
                self.admitted += 1
                full = False
        if full:
            raise Refused(
                f"{self.name} is at capacity ({self.workers} workers, "
                f"{self.capacity - self.workers} queued)",
                retry_after=self.retry_after,
            )

    def release(self) -> None:
        """Give a slot back: the call's work finished, failed, or was cancelled before it ran."""
        with self._lock:
            self.admitted -= 1

    def release_when_done(self, _: object) -> None:
        """`release` as a future's done callback."""
        self.release()

    def start(self) -> None:
        with self._lock:
            self.running += 1

    def stop(self) -> None:
        with self._lock:
            self.running -= 1
