"""Load shedding: beyond `max_in_flight` requests the gateway answers 503 with Retry-After at
once instead of queueing. A fast refusal keeps the admitted requests' latency and the
process's memory bounded. Health and metrics routes are never shed, so probes keep telling
the truth."""

from __future__ import annotations

from dataclasses import dataclass

UNSHED_PATHS = frozenset({"/livez", "/readyz", "/metrics", "/status", "/status/live"})


@dataclass(slots=True)
class Admission:
    """Requests in flight in this process, against the cap."""

    max_in_flight: int
    in_flight: int = 0
    peak: int = 0

    def __repr__(self) -> str:
        return f"<Admission [in flight: {self.in_flight}/{self.max_in_flight}, peak {self.peak}]>"

    def admit(self) -> bool:
        """Count a request in, or say it must be shed."""
        if self.in_flight >= self.max_in_flight:
            return False
        self.in_flight += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight
        return True

    def leave(self) -> None:
        self.in_flight -= 1
