"""The named load profiles of `python -m loadtests.run`: who runs, how many, for how long, and
what must hold. Every field can be overridden from the command line.

The numbers are sized for one 2-core machine with a 20,000 open-files hard limit; the
arithmetic is in docs/capacity/README.md and in each profile's `why`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Profile:
    """One load profile: the load, the gateway's settings and the SLOs checked afterwards."""

    name: str
    why: str
    users: int
    spawn_rate: float
    hold_s: float  # after the ramp; locust's --run-time is ramp + hold
    stop_timeout_s: float  # users finish their request in flight before stopping
    processes: int  # locust worker processes (each one simulates users/processes users)
    locust_env: dict[str, str] = field(default_factory=dict)
    gateway_env: dict[str, str] = field(default_factory=dict)
    max_failure_ratio: float = 0.0
    max_p99_ms: float | None = None
    min_peak_in_flight: int | None = None
    min_peak_connections: int | None = None
    min_shed: int | None = None
    recovery_path: str = "/api/products/1"

    @property
    def ramp_s(self) -> float:
        return self.users / self.spawn_rate


SLOW_DELAY = "5s"

PROFILES = {
    p.name: p
    for p in (
        Profile(
            name="smoke",
            why="A few hundred users of the realistic mix for a few seconds: proves the "
            "whole path (stack, locust, metrics sampling, report) works. No latency target.",
            users=300,
            spawn_rate=150,
            hold_s=10,
            stop_timeout_s=10,
            processes=1,
            locust_env={
                "FANOUT_SCENARIO": "mix",
                "FANOUT_THINK_MIN_S": "0.5",
                "FANOUT_THINK_MAX_S": "1.5",
            },
        ),
        Profile(
            name="slow-backend",
            why="10,000 closed-loop users without think time, each request asking both "
            f"backends for a {SLOW_DELAY} delay: every user holds one request in flight, so "
            "the gateway holds 10,000 at once. Upstream sockets stay capped at 2 x 2,000 "
            "(max_connections): throughput is 2,000 / 5s = 400 requests/s and a request "
            "queues ~10,000 / 400 = 25s for its upstream slot, inside the 50s backend "
            "timeout and the 60s endpoint deadline.",
            users=10_000,
            spawn_rate=500,
            hold_s=60,
            stop_timeout_s=60,
            processes=2,
            locust_env={"FANOUT_SCENARIO": "slow", "FANOUT_SLOW_DELAY": SLOW_DELAY},
            max_p99_ms=50_000,
            min_peak_in_flight=10_000,
            min_peak_connections=10_000,
        ),
        Profile(
            name="mix",
            why="10,000 users browsing the realistic mix with 10-30s think time (a page "
            "every ~20s per user, ~500 requests/s, ~1,200 backend calls/s): the request "
            "rate one gateway process shares 2 cores with locust and the demo services at.",
            users=10_000,
            spawn_rate=500,
            hold_s=90,
            stop_timeout_s=30,
            processes=2,
            locust_env={
                "FANOUT_SCENARIO": "mix",
                "FANOUT_THINK_MIN_S": "10",
                "FANOUT_THINK_MAX_S": "30",
            },
            max_p99_ms=1_000,
            min_peak_connections=10_000,
        ),
        Profile(
            name="overload",
            why="The slow-backend load (10,000 users, no think time, 2s backend delay) "
            "against a gateway allowed only 2,000 requests in flight "
            "(GATEWAY_MAX_IN_FLIGHT=2000): the rest must get a fast 503 with Retry-After "
            "(users wait Retry-After = 5s before retrying) while admitted requests keep "
            "their ~2s latency; afterwards a plain request must succeed.",
            users=10_000,
            spawn_rate=500,
            hold_s=60,
            stop_timeout_s=30,
            processes=2,
            locust_env={
                "FANOUT_SCENARIO": "slow",
                "FANOUT_SLOW_DELAY": "2s",
                "FANOUT_SHED_OK": "1",
            },
            gateway_env={"GATEWAY_MAX_IN_FLIGHT": "2000", "GATEWAY_RETRY_AFTER_SECONDS": "5"},
            max_p99_ms=3_000,
            min_peak_connections=10_000,
            min_shed=1_000,
        ),
    )
}
