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
# Above the Retry-After of the overload profile (and, in `mix`, above the longest think
# time): uvicorn closes a connection idle for longer, so idle users would hold far fewer
# than 10,000 connections with the 5 s default, and reconnect over and over.
KEEP_ALIVE = {"GATEWAY_KEEP_ALIVE_SECONDS": "75"}

PROFILES = {
    p.name: p
    for p in (
        Profile(
            name="smoke",
            why="A few hundred users of the realistic mix (SQL-backed user page included) for "
            "a few seconds: proves the whole path (database, stack, locust, metrics sampling, "
            "report, verdict) works. No latency target: CI machines vary.",
            users=300,
            spawn_rate=150,
            hold_s=8,
            stop_timeout_s=10,
            processes=1,
            locust_env={
                "FANOUT_SCENARIO": "mix",
                "FANOUT_THINK_MIN_S": "0.5",
                "FANOUT_THINK_MAX_S": "1.5",
                "FANOUT_USERS_WEIGHT": "2",
            },
        ),
        Profile(
            name="slow-backend",
            why="10,000 closed-loop users without think time, each request asking both "
            f"backends of /api/home for a {SLOW_DELAY} delay: every user always has one "
            "request in flight, so the gateway holds 10,000 at once. Upstream sockets stay "
            "capped at 2 x 2,000 (max_connections), 14,000 descriptors in all: requests beyond "
            "the cap wait for a slot inside the gateway. Throughput is then at most "
            "2,000 / 5 s = 400 requests/s (less where the shared 2 cores run out first) and a "
            "request waits ~10,000 / throughput for its turn: 25-40 s, inside the 50 s backend "
            "timeout and the 60 s endpoint deadline.",
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
            why="10,000 users browsing the realistic mix (product pages, home, user pages "
            "from PostgreSQL, passthrough) with 60-120 s think time: a page every ~90 s per "
            "user, ~110 requests/s and ~290 backend calls/s. One gateway process shares the "
            "2 cores with locust, the demo services, PostgreSQL and whatever else runs on "
            "the machine; at 30-60 s (~200 requests/s) no run here passed while other test "
            "suites ran beside it. Users start at a random point of their think time (not all "
            "at once on spawn), and the gateway keeps idle connections 150 s, so all "
            "10,000 stay open.",
            users=10_000,
            # 250/s: at 500/s the spawning itself (locust's CPU, 500 new connections/s) made
            # the end of the ramp the slowest part of the run
            spawn_rate=250,
            hold_s=140,  # the last users spawned make their first request up to 120 s later
            stop_timeout_s=30,
            processes=2,
            locust_env={
                "FANOUT_SCENARIO": "mix",
                "FANOUT_THINK_MIN_S": "60",
                "FANOUT_THINK_MAX_S": "120",
                "FANOUT_USERS_WEIGHT": "2",
            },
            gateway_env={"GATEWAY_KEEP_ALIVE_SECONDS": "150"},
            max_p99_ms=1_000,
            min_peak_connections=10_000,
        ),
        Profile(
            name="overload",
            why="10,000 closed-loop users (2 s backend delay, no think time) against a gateway "
            "allowed 200 requests in flight (GATEWAY_MAX_IN_FLIGHT=200): 50 times its "
            "capacity. The rest must get a fast 503 with Retry-After (30 s; users wait 30-60 s, "
            "so ~220 shed requests/s) while admitted requests keep their ~2 s latency; when the "
            "load stops, in-flight requests drain to 0 and a plain request succeeds.",
            users=10_000,
            spawn_rate=250,
            hold_s=60,
            stop_timeout_s=40,
            processes=2,
            locust_env={
                "FANOUT_SCENARIO": "slow",
                "FANOUT_SLOW_DELAY": "2s",
                "FANOUT_SHED_OK": "1",
            },
            gateway_env={
                "GATEWAY_MAX_IN_FLIGHT": "200",
                "GATEWAY_RETRY_AFTER_SECONDS": "30",
                **KEEP_ALIVE,
            },
            max_p99_ms=3_000,
            min_peak_connections=10_000,
            min_shed=1_000,
        ),
    )
}
