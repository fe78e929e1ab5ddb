"""A gateway process for async tests: started on a config, ready, its log kept in a file,
its /metrics readable, and stopped by PID (it must exit 0) at the end."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import Running, start_gateway

FAST_STOP = {"GATEWAY_DRAIN_SECONDS": "0", "GATEWAY_GRACEFUL_TIMEOUT_SECONDS": "5"}


@dataclass
class Gateway:
    running: Running
    http: httpx.AsyncClient
    log_path: Path

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def pid(self) -> int:
        return self.running.process.pid

    def log(self) -> str:
        """What the gateway wrote to stderr so far (its log)."""
        return self.log_path.read_text()

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 if none)."""
        text = (await self.http.get("/metrics")).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    async def wait_metric(
        self, name: str, done: Callable[[float], bool], seconds: float = 15, **labels: str
    ) -> float:
        """Poll /metrics until `done(value)`; fail the test after `seconds`."""
        deadline = time.monotonic() + seconds
        while not done(value := await self.metric(name, **labels)):
            assert time.monotonic() < deadline, f"{name}{labels} stayed at {value}"
            await asyncio.sleep(0.02)  # the polling interval of a condition
        return value


@asynccontextmanager
async def gateway(
    tmp_path: Path, config: str, env: dict[str, str] | None = None
) -> AsyncIterator[Gateway]:
    """A gateway process on `config`, ready; stopped by PID (and must exit 0) afterwards."""
    name = f"gateway-{uuid.uuid4().hex[:8]}"
    path, log_path = tmp_path / f"{name}.yaml", tmp_path / f"{name}.log"
    path.write_text(config)
    with log_path.open("wb") as log:
        running = start_gateway(path, env={**FAST_STOP, **(env or {})}, stderr=log)
        try:
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
            async with httpx.AsyncClient(base_url=running.url, timeout=60, limits=limits) as http:
                # the socket is listening already: this waits until the app has started
                assert (await http.get("/readyz")).status_code == 200
                yield Gateway(running, http, log_path)
        except BaseException:
            print(f"--- {log_path.name}\n{log_path.read_text()}")  # shown with the failure
            raise
        finally:
            # in a thread: the proxies on this loop must keep serving while the gateway stops
            code = await asyncio.to_thread(running.stop)
    assert code == 0, f"gateway exit code {code}"


async def until(condition: Callable[[], bool], seconds: float = 15) -> None:
    """Wait for `condition`, polling; fail the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        await asyncio.sleep(0.01)  # the polling interval of a condition
