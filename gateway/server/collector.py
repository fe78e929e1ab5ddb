"""The cycle collector's pace in a server process: a young collection per 20,000 new
container objects instead of CPython's 700.

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

20,000 takes the gain (-10 to -19% on a call, -5 to -10% on a passthrough); a cycle still
waits for at most that many new containers.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000
"""New container objects (allocations minus frees) between two young collections."""


def pace_collector() -> None:
    """Set the young generation's threshold for serving (the older ones' are kept)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
