"""The access log (`GATEWAY_ACCESS_LOG=1`): one JSON line per request on stdout.

The event loop only encodes the line (orjson) and appends it to a bounded queue; a thread
of the access log writes what has queued up in one `write` per batch. So a slow stdout (a
pipe the log shipper reads late) never blocks the loop, and a stuck one costs at most
`GATEWAY_ACCESS_LOG_QUEUE` lines of memory: past that, lines are dropped and counted in
`gateway_access_log_dropped_total`. Not `logging`: a LogRecord, its filters and its
formatter cost more than the line itself, and the line is already JSON (see
docs/observability.md for the measured cost of the whole access log).
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import IO, Any

import orjson
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

_STOP = b""


class AccessLog:
    """A bounded queue of encoded lines and the thread that writes them."""

    def __init__(self, capacity: int, stream: IO[bytes] | None = None) -> None:
        self.capacity = capacity
        self.dropped = 0  # the loop's count (queue full)
        self.lost = 0  # the writer thread's count (stdout closed)
        self.written = 0
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=capacity)
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._thread = threading.Thread(target=self._write_loop, name="access-log", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<AccessLog [{self._queue.qsize()}/{self.capacity} queued, {self.dropped} dropped]>"

    def write(self, line: Mapping[str, Any]) -> None:
        """Queue one line (on the loop; never blocks)."""
        try:
            self._queue.put_nowait(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        """Write what is queued and stop the thread (at shutdown)."""
        self._queue.put(_STOP)
        self._thread.join(timeout=5)

    def _write_loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < 1024:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in batch
            lines = [line for line in batch if line]
            if lines:
                try:
                    self._stream.write(b"".join(lines))
                    self._stream.flush()
                except (OSError, ValueError):  # stdout closed: nothing more can be written
                    self.lost += len(lines)
                else:
                    self.written += len(lines)
            if stop:
                return


class AccessLogCollector(Collector):
    """`gateway_access_log_dropped_total`: lines lost to a full queue or a closed stdout."""

    def __init__(self, log: AccessLog) -> None:
        self.log = log

    def collect(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily(
            "gateway_access_log_dropped",
            "Access log lines dropped: the queue was full (stdout too slow) or stdout closed.",
        )
        dropped.add_metric([], self.log.dropped + self.log.lost)
        yield dropped


def open_access_log(capacity: int, registry: CollectorRegistry) -> AccessLog:
    """The app's access log, its drop counter in the app's registry; `close()` it at exit."""
    log = AccessLog(capacity)
    registry.register(AccessLogCollector(log))
    return log
