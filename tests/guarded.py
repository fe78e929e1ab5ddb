"""A gateway process for the authentication, CORS and rate-limit tests, with its log kept and
shown when a test fails, and its metrics read by name."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import Running, start_gateway

FAST_STOP = {"GATEWAY_DRAIN_SECONDS": "0", "GATEWAY_GRACEFUL_TIMEOUT_SECONDS": "5"}


@dataclass
class Guarded:
    """A running gateway and a client of it."""

    running: Running
    http: httpx.Client
    log_path: Path

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 if none)."""
        text = self.http.get("/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def guarded_gateway(
    tmp_path: Path, config: str, env: dict[str, str] | None = None, *, probe: str = "/readyz"
) -> Iterator[Guarded]:
    """A gateway on `config`, answering `probe` (ready, or only alive: "/livez"); stopped by
    PID (and it must exit 0) afterwards."""
    name = f"gateway-{uuid.uuid4().hex[:8]}"
    path, log_path = tmp_path / f"{name}.yaml", tmp_path / f"{name}.log"
    path.write_text(config)
    with log_path.open("wb") as log:
        running = start_gateway(path, env={**FAST_STOP, **(env or {})}, stderr=log)
        try:
            with httpx.Client(base_url=running.url, timeout=30) as http:
                # the socket listens already: this waits until the app has started
                assert http.get(probe).status_code == 200, log_path.read_text()
                yield Guarded(running, http, log_path)
        except BaseException:
            print(f"--- {log_path.name}\n{log_path.read_text(errors='replace')}")
            raise
        finally:
            code = running.stop()
    assert code == 0, f"gateway exit code {code}"


def until(condition: Callable[[], bool], seconds: float = 15, what: str = "condition") -> float:
    """Poll `condition` until it holds; fail after `seconds`. Returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"the {what} never came true"
        time.sleep(0.02)  # the polling interval of a condition
    return time.monotonic() - started
