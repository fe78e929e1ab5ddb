"""Watching the gateway while it is attacked: its memory, and a normal client beside the attack.

`RssWatch` samples the gateway process's resident memory in a thread (so a busy event loop
in the test does not hide a peak); `NormalClient` keeps sending ordinary requests on its own
connection and records each answer, so a test can assert that others were served meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import httpx
import psutil

MIB = 1024 * 1024


class RssWatch:
    """The resident memory of process `pid`: before, the peak while watched, and now."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        self._process = psutil.Process(pid)
        self._every = every
        self.before = self.now()
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def now(self) -> int:
        rss: int = self._process.memory_info().rss
        return rss

    def _sample(self) -> None:
        while not self._stop.wait(self._every):  # the sampling period, not a synchronisation
            self.peak = max(self.peak, self.now())

    @property
    def grew(self) -> float:
        """How far the peak rose above `before`, in MiB."""
        return (self.peak - self.before) / MIB


@dataclass
class NormalClient:
    """Requests to `path` in a loop on a connection of its own until `stop()`."""

    base_url: str
    path: str = "/livez"
    timeout: float = 10.0
    answers: list[tuple[int, float]] = field(default_factory=list)  # (status, seconds)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> NormalClient:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, limits=limits
        ) as http:
            while not self._stop.is_set():
                started = time.perf_counter()
                response = await http.get(self.path)
                self.answers.append((response.status_code, time.perf_counter() - started))
                await asyncio.sleep(0.01)  # the client's pace, not a synchronisation

    @property
    def statuses(self) -> set[int]:
        """Every status it got (empty if it got no answer at all: then not {200})."""
        return {status for status, _ in self.answers}

    def p99(self) -> float:
        ordered = sorted(seconds for _, seconds in self.answers)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0
