"""`--watch` (development): reload whenever the routes file, or a file it includes, changes.

watchfiles waits on the files' directories with inotify and batches a burst of writes (an
editor's save is often several) into one change set, so one save is one reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import watchfiles

from gateway.config.loader import load_config
from gateway.errors import ConfigError
from gateway.web.runtime import Runtime

log = logging.getLogger("gateway.reload")


@asynccontextmanager
async def watching(runtime: Runtime) -> AsyncIterator[None]:
    """Watch the runtime's files while the block runs (the app's lifespan)."""
    task = asyncio.get_running_loop().create_task(_watch(runtime), name="config-watch")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _watch(runtime: Runtime) -> None:
    path = runtime.settings.config
    if path is None:
        log.warning("--watch: the routes file's path is unknown (GATEWAY_CONFIG)")
        return
    try:
        runtime.files = (await asyncio.to_thread(load_config, path)).files
    except ConfigError:
        runtime.files = (path,)
    while True:
        watched = await asyncio.to_thread(_resolved, runtime.files)
        ready = False
        # with yield_on_timeout an empty set comes every second without changes: the first
        # one says the watch is in place (a change before it would go unseen)
        async for changes in watchfiles.awatch(*watched, yield_on_timeout=True, rust_timeout=1000):
            if not ready:
                ready = True
                log.info("watching %s for changes", ", ".join(sorted(watched)))
            if not changes:
                continue
            log.info("changed: %s", ", ".join(sorted({name for _, name in changes})))
            await runtime.reload()
            if await asyncio.to_thread(_resolved, runtime.files) != watched:
                break  # the includes changed: watch the new set of files


def _resolved(names: tuple[str, ...]) -> set[str]:
    return {str(Path(name).resolve()) for name in names}
