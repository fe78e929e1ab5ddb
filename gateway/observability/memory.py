"""Giving freed memory back to the operating system after a burst.

glibc keeps the heap memory Python frees for reuse, and returns it to the system only from
the top of the heap; and what a burst of failed calls leaves in reference cycles (aiohttp's
connection objects, tracebacks holding frames) waits for the cycle collector. After 3 bursts
of 8 endless bodies and 8 gzip bombs (each call cut off at its 8 MiB `max_response`) the
process stayed ~45 MiB above where it started, however long it then idled. So a task checks
every `every` seconds (`GATEWAY_MEMORY_TRIM_SECONDS`, 1) whether the resident size grew by
`TRIM_WHEN_GROWN_BYTES` since the last check, and if so runs the cycle collector and
`malloc_trim(0)`, which also releases the free pages inside the heap: 2-4 ms, measured.

Only once the growth has stopped (`TrimPace`): a process that is still growing is taking on
load, not left with a burst's garbage, and a full collection walks every object its requests
in flight hold. Collecting at every check while 10,000 connections ramped up took 14 full
collections of up to 2.5 s each, 38% of the gateway's CPU (`python -m loadtests.run --profile
slow-backend` with its delay at 2 s and a gateway whose `sitecustomize` timed collections by
`gc.callbacks`, neither committed; py-spy put 40% of the samples in this task); the same run
after this change made 2.

Measured by `python -m benchmarks.hostile` ("memory after a burst", RSS MiB before / peak /
3 s after; docs/security.md): this 66 / 143 / 62; neither 66 / 143 / 109;
`MALLOC_ARENA_MAX=2` (fewer per-thread arenas) 66 / 128 / 127, since the buffers are
allocated on the event loop's thread; `MALLOC_MMAP_THRESHOLD_=131072` (large blocks always
mmap'ed, so returned on free, at a system call each) 65 / 136 / 102. Without glibc's
`malloc_trim` or /proc (musl, macOS) there is no task, only the start-up freeze below.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

log = logging.getLogger("gateway.memory")

TRIM_EVERY_SECONDS = 1.0
TRIM_WHEN_GROWN_BYTES = 16 * 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


SETTLED_BYTES = 1024 * 1024
"""Growth between two checks below which the process counts as no longer growing."""


class TrimPace:
    """When to collect and trim: the process grew by `grown` bytes over the lowest size seen
    since the last trim, and did not grow by `SETTLED_BYTES` since the previous check."""

    def __init__(self, start: int, grown: int) -> None:
        self.low = self.last = start
        self.grown = grown

    def due(self, now: int) -> bool:
        """Whether a process of `now` resident bytes is to be trimmed now."""
        growing = now - self.last >= SETTLED_BYTES
        self.last = now
        if now - self.low >= self.grown and not growing:
            return True
        self.low = min(self.low, now)
        return False

    def trimmed(self, now: int) -> None:
        """The size after a trim: growth is counted from here."""
        self.low = self.last = now


def resident_bytes() -> int:
    """This process's resident size (from /proc; 0 where there is none)."""
    try:
        return int(Path("/proc/self/statm").read_bytes().split()[1]) * _PAGE
    except OSError:
        return 0


@asynccontextmanager
async def trimming_memory(
    every: float = TRIM_EVERY_SECONDS, grown: int = TRIM_WHEN_GROWN_BYTES
) -> AsyncIterator[None]:
    """While inside, give freed heap memory back to the system after the process grew;
    `every` 0 turns it off."""
    # what start-up allocated (modules, the config, plans, pools) lives as long as the
    # process: collected once and frozen, a full collection no longer walks it (measured:
    # 17 ms for the demo config's 60,000 objects, then ~0.1 ms)
    gc.collect()
    gc.freeze()
    trim = _malloc_trim()
    if trim is None or resident_bytes() == 0 or every <= 0:
        yield
        return

    async def run() -> None:
        pace = TrimPace(resident_bytes(), grown)
        while True:
            await asyncio.sleep(every)  # a periodic task's period, not a synchronisation
            now = resident_bytes()
            if pace.due(now):
                started = time.perf_counter()
                gc.collect()  # what a burst left in reference cycles (aiohttp's, tracebacks')
                trim(0)
                pace.trimmed(resident_bytes())
                pause = (time.perf_counter() - started) * 1000
                log.debug(
                    "memory given back: %d -> %d MiB in %.1f ms", now >> 20, pace.low >> 20, pause
                )

    task = asyncio.ensure_future(run())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
