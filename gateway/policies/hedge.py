"""Hedging policy: when a try has not answered after `after`, send a copy; first success wins.

A slow tail (one request in twenty stuck behind a GC pause or a cold cache) then costs
`after` plus a normal answer instead of the whole slow answer. Set `after` near the backend's
p95 so copies stay a few percent of the traffic. Losers are cancelled and awaited, so no copy
outlives the call. A copy that fails does not end the call while another one may still win;
only idempotent calls are hedged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.config.models import HedgeSpec
from gateway.errors import CallError
from gateway.types import BackendRequest, BackendResponse, Call, Policy


def hedge(
    settings: HedgeSpec, *, on_sent: Callable[[], None], on_won: Callable[[], None]
) -> Policy:
    """Race up to `1 + settings.max` copies of a call, `settings.after` apart."""

    def policy(inner: Call) -> Call:
        async def call(request: BackendRequest) -> BackendResponse:
            first = asyncio.ensure_future(inner(request))
            pending = {first}
            sent = 0
            error: CallError | None = None
            try:
                while pending:
                    wait = settings.after if sent < settings.max else None
                    done, pending = await asyncio.wait(
                        pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                    )
                    if not done:  # nothing answered in time: send one more copy
                        pending.add(asyncio.ensure_future(inner(request)))
                        sent += 1
                        on_sent()
                        continue
                    winner = None
                    for task in done:  # look at every finished copy so none goes unretrieved
                        exc = task.exception()
                        if exc is None:
                            winner = winner or task
                        elif not isinstance(exc, CallError):
                            raise exc  # a bug, not a failed try: let it surface
                        else:
                            error = exc
                    if winner is not None:
                        if winner is not first:
                            on_won()
                        return winner.result()
                assert error is not None  # the loop only ends after a failed try
                raise error
            finally:
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending)
                    for task in pending:  # a copy that failed before its cancel landed
                        if not task.cancelled():
                            task.exception()  # retrieved: no "never retrieved" log

        return call

    return policy
