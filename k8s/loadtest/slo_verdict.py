"""The SLO verdict of a distributed locust run: the master's exit code says pass or fail.

Loaded beside loadtests/locustfile.py (`--locustfile=locustfile.py,slo_verdict.py`; the
files come from the `locustfile` ConfigMap of k8s/loadtest, slo.py with them). When the run
ends, the master checks the statistics aggregated from every worker against the SLOs given
as options (rules in slo.py), logs each one missed, and exits 1 if any was, 0 otherwise:

    --slo-max-failure-ratio   failed / all requests, at most                      (0)
    --slo-max-p99-ms          p99 of all requests in ms, at most; unset: unchecked
    --slo-min-requests        at least this many requests (else nothing was measured)  (1)

Without this file locust exits 1 only when a request failed (`--exit-code-on-error`), which
says nothing about latency. Like the locustfile it needs only locust and the standard library.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner
from slo import Slo, verdict  # beside this file: locust puts its directory on sys.path

log = logging.getLogger("slo")


def _add_options(parser: argparse.ArgumentParser, **_: Any) -> None:
    parser.add_argument("--slo-max-failure-ratio", type=float, default=0.0, help="SLO: at most")
    parser.add_argument("--slo-max-p99-ms", type=float, default=None, help="SLO: at most (ms)")
    parser.add_argument("--slo-min-requests", type=int, default=1, help="SLO: at least")


def _decide_exit_code(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return  # workers only report; the master decides
    options = environment.parsed_options
    slo = Slo(options.slo_max_failure_ratio, options.slo_max_p99_ms, options.slo_min_requests)
    total = environment.stats.total
    p99 = total.get_response_time_percentile(0.99) if total.num_requests else None
    missed = verdict(total.num_requests, total.num_failures, p99, slo)
    for line in missed:
        log.error("SLO missed: %s", line)
    if not missed:
        log.info(
            "SLO met: %d requests, %d failed, p99 %s ms (%s)",
            total.num_requests,
            total.num_failures,
            p99,
            slo,
        )
    environment.process_exit_code = 1 if missed else 0


events.init_command_line_parser.add_listener(_add_options)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_decide_exit_code)  # type: ignore[no-untyped-call]
