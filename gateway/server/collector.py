"""The cycle collector's pace in a server process: a young collection per 20,000 new
container objects instead of CPython's 700, and less often still while collections find
nothing to free.

Reference counting frees a request's objects as soon as it is done; the cycle collector is
only for the rare reference cycle (what a burst of failed calls leaves, which
`gateway.observability.memory` collects once the process grew). But every 700 allocations it
walks the young objects, and with hundreds of requests in flight their objects are young and
alive at every walk, so it keeps walking them (and promoting them, so the older generations'
walks grow too) for nothing: under a 1-call load no collection found a cycle to free.
`python -m benchmarks.collector` (CPU us per request, medians of 3 runs, two runs):

    threshold                  700      7,000     20,000    100,000   collector off
    1 call, 256 connections    371-372  320-352   301-333   317-326   324-340
    passthrough, 64            260-269  243      242-246   237-240   241-242

20,000 takes the gain (-10 to -19% on a call, -5 to -10% on a passthrough). A fixed
threshold is still too low once more objects are in flight than it allows: with 512
connections on a 3-call fan-out, each request's objects outlive the time it takes to
allocate 20,000 more, so every one of them is walked (and promoted) before it dies, and
young collections took ~16% of the gateway's CPU (1.0 s of 6.2 s: wrk against a gateway
started with a `sitecustomize` that timed collections by `gc.callbacks`, not committed).
So a young collection that freed nothing doubles the threshold, up to `YOUNG_CEILING`, and
one that freed a cycle brings it back to `YOUNG_THRESHOLD`: a load that makes no garbage is
walked less and less, and one that does (failed calls' tracebacks) is collected at the
base pace. The figures for this are in docs/benchmarks.md (`benchmarks.collector`).
"""

from __future__ import annotations

import gc
from typing import Any

YOUNG_THRESHOLD = 20_000
"""New container objects (allocations minus frees) between two young collections."""

YOUNG_CEILING = 640_000
"""The most the young threshold grows to while collections free nothing (5 doublings): at
~2,000 tracked objects per fan-out request, a cycle then waits for ~300 requests' worth of
allocations, and the memory task's collection after 16 MiB of growth stays the backstop."""


def _after_collection(phase: str, info: dict[str, Any]) -> None:
    """A `gc.callbacks` hook: after a young or middle collection, double the young threshold
    if it freed nothing, go back to the base if it freed a cycle."""
    if phase != "stop" or info["generation"] > 1:
        return
    young, older, oldest = gc.get_threshold()
    if info["collected"] or info["uncollectable"]:
        wanted = YOUNG_THRESHOLD
    else:
        wanted = min(young * 2, YOUNG_CEILING)
    if wanted != young:
        gc.set_threshold(wanted, older, oldest)


def pace_collector() -> None:
    """Set the young generation's threshold for serving (the older ones' are kept), and let
    it follow what collections find."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    if _after_collection not in gc.callbacks:
        gc.callbacks.append(_after_collection)
