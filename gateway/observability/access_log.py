"""The access log (`GATEWAY_ACCESS_LOG=1`): one JSON line per request on stdout.

The event loop only encodes the line (orjson) and appends it to a bounded deque (an atomic
append: no lock, no wake-up); a thread of the access log takes what has accumulated every
`FLUSH_SECONDS` and writes it in one `write`. So a slow stdout (a pipe the log shipper reads
late) never blocks the loop, and a stuck one costs at most `GATEWAY_ACCESS_LOG_QUEUE` lines
of memory: past that, lines are dropped and counted in `gateway_access_log_dropped_total`.
Not `logging`: a LogRecord, its filters and its formatter cost more than the line itself,
and the line is already JSON; not a `queue.Queue` either, whose lock and condition cost a
few microseconds per put (see docs/observability.md for the measured cost of the whole).
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from typing import IO, Any

import orjson
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

FLUSH_SECONDS = 0.05
"""How long a line may wait for the batch it is written with."""


class AccessLog:
    """A bounded buffer of encoded lines and the thread that writes them."""

    def __init__(self, capacity: int, stream: IO[bytes] | None = None) -> None:
        self.capacity = capacity
        self.dropped = 0  # the loop's count (buffer full)
        self.lost = 0  # the writer thread's count (stdout closed)
        self.written = 0
        self._lines: deque[bytes] = deque()
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name="access-log", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<AccessLog [{len(self._lines)}/{self.capacity} queued, {self.dropped} dropped]>"

    def write(self, line: Mapping[str, Any]) -> None:
        """Buffer one line (on the loop; never blocks)."""
        if len(self._lines) >= self.capacity:
            self.dropped += 1
            return
        self._lines.append(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))

    def close(self) -> None:
        """Write what is buffered and stop the thread (at shutdown)."""
        self._closing.set()
        self._thread.join(timeout=5)

    def _write_loop(self) -> None:
        while not self._closing.wait(FLUSH_SECONDS):
            self._flush()
        self._flush()

    def _flush(self) -> None:
        lines = self._lines
        batch = [lines.popleft() for _ in range(len(lines))]  # popleft is atomic too
        if not batch:
            return
        try:
            self._stream.write(b"".join(batch))
            self._stream.flush()
        except (OSError, ValueError):  # stdout closed: nothing more can be written
            self.lost += len(batch)
        else:
            self.written += len(batch)


class AccessLogCollector(Collector):
    """`gateway_access_log_dropped_total`: lines lost to a full buffer or a closed stdout."""

    def __init__(self, log: AccessLog) -> None:
        self.log = log

    def collect(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily(
            "gateway_access_log_dropped",
            "Access log lines dropped: the buffer was full (stdout too slow) or stdout closed.",
        )
        dropped.add_metric([], self.log.dropped + self.log.lost)
        yield dropped


def open_access_log(capacity: int, registry: CollectorRegistry) -> AccessLog:
    """The app's access log, its drop counter in the app's registry; `close()` it at exit."""
    log = AccessLog(capacity)
    registry.register(AccessLogCollector(log))
    return log
