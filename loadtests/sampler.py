"""Sampling the gateway while locust runs: its /metrics gauges and its process (RSS, fds).

The `*_peak` gauges are exact (kept by the gateway since it started); the sampled values
show the shape over time. Upstream sockets are the established TCP connections to the demo
services' ports, counted by `ss` (iproute2) with a kernel-side filter: psutil's per-process
scan parses the whole socket table in Python, seconds at 15,000 sockets. Only the gateway
connects to those ports, so the count is the gateway's.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

METRICS = {
    "gateway_requests_in_flight": "in_flight",
    "gateway_requests_in_flight_peak": "in_flight_peak",
    "gateway_open_connections": "open_connections",
    "gateway_open_connections_peak": "open_connections_peak",
    "gateway_shed_requests_total": "shed_total",
}
SOCKET_COUNT_EVERY = 2  # samples
SS = shutil.which("ss")


@dataclass(slots=True)
class Sample:
    """One observation of the gateway; -1 where it could not be read."""

    t_s: float
    in_flight: float = -1
    in_flight_peak: float = -1
    open_connections: float = -1
    open_connections_peak: float = -1
    shed_total: float = -1
    rss_bytes: int = -1
    open_fds: int = -1
    cpu_percent: float = -1
    upstream_sockets: int = -1


def scrape_processes(url: str, timeout: float = 10.0) -> dict[str, dict[str, float]]:
    """The gateway's gauges of interest from one /metrics answer, by the `pid` label of the
    process they come from ("" for values of the whole group, and for a single process).

    With `--workers N` every worker answers /metrics with the group's summed counters but
    its own gauges (gateway/observability/multiprocess.py), and SO_REUSEPORT hands each
    scrape to one of them; `Sampler` keeps the latest values of every worker it has heard."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    values: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = METRICS.get(sample.name)
            if key is not None:
                values.setdefault(sample.labels.get("pid", ""), {})[key] = sample.value
    return values


def summed(processes: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each gauge summed over the processes (a worker's requests in flight add up)."""
    total: dict[str, float] = {}
    for values in processes.values():
        for key, value in values.items():
            total[key] = total.get(key, 0.0) + value
    return total


def scrape(url: str, timeout: float = 10.0) -> dict[str, float]:
    """The gateway's gauges of interest, summed over what one /metrics answer holds."""
    return summed(scrape_processes(url, timeout))


def answers_by_status(url: str, timeout: float = 30.0) -> dict[str, int]:
    """How many requests the gateway itself answered, by status (`gateway_requests_total`).

    Shed requests are not in it (`gateway_shed_requests_total` counts them). Unlike
    locust's statistics it also covers requests a client abandoned: locust's workers quit
    at the end of a distributed run without waiting for their requests in flight.
    """
    with urllib.request.urlopen(f"{url}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "gateway_requests":
            continue
        for sample in family.samples:
            if sample.name == "gateway_requests_total":
                status = sample.labels["status"]
                counts[status] = counts.get(status, 0) + int(sample.value)
    return dict(sorted(counts.items()))


class Sampler(threading.Thread):
    """Samples every `interval` seconds until stopped; keeps the samples in memory."""

    def __init__(
        self, url: str, pid: int | None, upstream_ports: set[int], interval: float = 1.0
    ) -> None:
        super().__init__(name="gateway-sampler", daemon=True)
        self.url = url
        self.process = psutil.Process(pid) if pid else None
        self._tree: dict[int, psutil.Process] = {}
        self._latest: dict[str, dict[str, float]] = {}
        """The last gauges heard from each worker (by pid)."""
        self.upstream_ports = upstream_ports
        self.interval = interval
        self.samples: list[Sample] = []
        self.errors = 0
        self._stop_event = threading.Event()
        self._t0 = time.monotonic()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def run(self) -> None:
        count = 0
        while not self._stop_event.is_set():
            self.samples.append(self.sample(count_sockets=count % SOCKET_COUNT_EVERY == 0))
            count += 1
            self._stop_event.wait(self.interval)

    def sample(self, count_sockets: bool = False) -> Sample:
        sample = Sample(t_s=round(time.monotonic() - self._t0, 1))
        try:
            self._latest.update(scrape_processes(self.url))
            for key, value in summed(self._latest).items():
                setattr(sample, key, value)
            if len([pid for pid in self._latest if pid]) > 1:
                # each worker's peak came at its own moment: their sum would overstate the
                # group's, so with workers the peak is the largest sampled sum
                sample.in_flight_peak = sample.in_flight
                sample.open_connections_peak = sample.open_connections
        except OSError:
            self.errors += 1  # a busy gateway may not answer in time; the gap shows in the CSV
        if self.process is not None:
            self._sample_processes(sample)
        if count_sockets and self.upstream_ports:
            sample.upstream_sockets = count_established(self.upstream_ports)
        return sample

    def _sample_processes(self, sample: Sample) -> None:
        """RSS, descriptors and CPU of the gateway and its workers (`--workers N`: the
        supervisor's children), summed: the whole gateway is what a capacity run sizes."""
        assert self.process is not None
        try:
            tree = [self.process, *self.process.children()]
        except psutil.Error:
            return  # the gateway is gone; the report says what was last seen
        rss = fds = 0
        cpu = 0.0
        for process in tree:
            # the same Process objects each time: cpu_percent measures since the last call
            known = self._tree.setdefault(process.pid, process)
            try:
                with known.oneshot():
                    rss += known.memory_info().rss
                    fds += known.num_fds()
                    cpu += known.cpu_percent()
            except psutil.Error:
                continue  # a worker that just ended
        sample.rss_bytes, sample.open_fds, sample.cpu_percent = rss, fds, cpu


def wait_drained(url: str, timeout_s: float) -> float | None:
    """Seconds until the gateway reports 0 requests in flight, or None after `timeout_s`.

    After the load stops, requests whose client has gone may still hold upstream slots;
    this shows how long the gateway takes to be idle again.
    """
    started = time.monotonic()
    latest: dict[str, dict[str, float]] = {}  # by worker, as `Sampler` keeps them
    while time.monotonic() - started < timeout_s:
        try:
            latest.update(scrape_processes(url))
            if summed(latest).get("in_flight", -1) == 0:
                return time.monotonic() - started
        except OSError:
            pass  # still too busy to answer: keep asking until the timeout
        time.sleep(1)  # a poll of the gateway's state, not test synchronisation
    return None


def count_established(ports: set[int]) -> int:
    """Established TCP connections to any of `ports` on this host; -1 without `ss`."""
    if SS is None:
        return -1
    selector = " or ".join(f"dport = :{port}" for port in sorted(ports))
    result = subprocess.run(
        [SS, "-Htn", "state", "established", f"( {selector} )"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return result.stdout.count("\n") if result.returncode == 0 else -1


def write_samples(samples: list[Sample], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(Sample)])
        writer.writeheader()
        writer.writerows(asdict(s) for s in samples)
