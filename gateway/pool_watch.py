"""What the postgres pools tell /metrics and /readyz.

The pools are opened by the lifespan, after the app and its registry exist, so the
collector reads the live `Backends.postgres` mapping at scrape time instead of holding
metric objects that would have to be bound later.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.backends.postgres import PostgresPool
from gateway.health import Health, ReadinessCheck

READINESS_PROBE_SECONDS = 1.0


class PoolCollector(Collector):
    """Size, use and wait time of every postgres pool, labelled by backend."""

    def __init__(self, pools: Mapping[str, PostgresPool]) -> None:
        self.pools = pools

    def collect(self) -> Iterator[GaugeMetricFamily | SummaryMetricFamily]:
        labels = ["backend"]
        size = GaugeMetricFamily(
            "gateway_db_pool_connections", "Open connections of the pool.", labels=labels
        )
        in_use = GaugeMetricFamily(
            "gateway_db_pool_in_use", "Connections lent to calls right now.", labels=labels
        )
        limit = GaugeMetricFamily(
            "gateway_db_pool_max", "Most connections the pool may open.", labels=labels
        )
        waiting = GaugeMetricFamily(
            "gateway_db_pool_waiting", "Calls waiting for a connection right now.", labels=labels
        )
        wait = SummaryMetricFamily(
            "gateway_db_pool_wait_seconds", "Time calls waited for a connection.", labels=labels
        )
        for name, backend in self.pools.items():
            pool = backend.pool
            size.add_metric([name], pool.get_size())
            in_use.add_metric([name], pool.get_size() - pool.get_idle_size())
            limit.add_metric([name], pool.get_max_size())
            waiting.add_metric([name], backend.waiting)
            wait.add_metric([name], backend.waits, backend.wait_seconds)
        yield from (size, in_use, limit, waiting, wait)


def watch_pools(
    pools: Mapping[str, PostgresPool], names: list[str], health: Health, registry: CollectorRegistry
) -> None:
    """Export the pools' metrics and add a readiness check per backend in `names`."""
    registry.register(PoolCollector(pools))
    for name in names:
        health.checks[f"postgres:{name}"] = _readiness(pools, name)


def _readiness(pools: Mapping[str, PostgresPool], name: str) -> ReadinessCheck:
    async def check() -> dict[str, object]:
        backend = pools[name]
        pool = backend.pool
        report: dict[str, object] = {
            "size": pool.get_size(),
            "in_use": pool.get_size() - pool.get_idle_size(),
            "max": pool.get_max_size(),
        }
        try:
            connection = await pool.acquire(timeout=READINESS_PROBE_SECONDS)
        except TimeoutError:
            # every connection is busy: the database answers, we are saturated, not broken
            return {**report, "saturated": True}
        try:
            await connection.fetchval("SELECT 1", timeout=READINESS_PROBE_SECONDS)
        finally:
            await pool.release(connection)
        return report

    return check
