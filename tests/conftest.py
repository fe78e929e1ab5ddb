"""Shared fixtures: the demo services run once per session as real processes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.devtools.embedded_pg import free_port, scratch_database
from gateway.devtools.embedded_redis import redis_server
from services.userdb import prepare as prepare_userdb
from tests.processes import Running, start, start_gateway, start_service


@pytest.fixture(scope="session")
def catalog() -> Iterator[Running]:
    service = start_service("catalog")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def reviews() -> Iterator[Running]:
    service = start_service("reviews")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A seeded PostgreSQL: DATABASE_URL when set (nothing started), else an embedded one."""
    with scratch_database("fanout-test-pg-") as dsn:
        asyncio.run(prepare_userdb(dsn))
        yield dsn


@pytest.fixture(scope="session")
def users(database_url: str) -> Iterator[Running]:
    service = start("users", [sys.executable, "-m", "services.users", "--dsn", database_url])
    yield service
    service.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis: REDIS_URL when set (nothing started), else an embedded one on a free port."""
    with redis_server(free_port()) as url:
        yield url


GatewayFactory = Callable[[str], Running]


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start gateways on config text; all are stopped (and must exit 0) after the test."""
    started: list[Running] = []

    def make(config_text: str) -> Running:
        path = tmp_path / f"gateway{len(started)}.yaml"
        path.write_text(config_text)
        gateway = start_gateway(path)
        started.append(gateway)
        return gateway

    yield make
    codes = [g.stop() for g in started]
    assert codes == [0] * len(codes), f"gateway exit codes: {codes}"


def client(running: Running, timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(base_url=running.url, timeout=timeout)
