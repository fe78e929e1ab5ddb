"""The app's live config, one generation at a time, and the reload that replaces it.

A `Generation` is everything one config is served with: its open backends, their policy
state, its guards (authenticators, limits), and its routes with their wired handlers.
`Runtime.reload` builds the next generation from the routes file, fully checked first:

* an invalid file leaves the current generation serving; the error is logged in one line and
  counted (`gateway_config_reload_failures_total{hash}`);
* a backend whose settings did not change is carried over as it is: its pools, sockets,
  breakers, bulkhead and retry budget (and the caches of its calls); a new or changed one is
  opened beside it;
* the new routes take the next requests at once; requests already in flight finish on the
  old generation, which then retires: the backends nothing uses any more are closed (after
  their last in-flight call, and after background calls, within the graceful timeout).

Reloads run one at a time; `request_reload` (SIGHUP, a file watcher) only schedules one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.asyncio import Redis
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.backends.live import LiveBackend, OpenContext
from gateway.backends.registry import open_backend, opening_order
from gateway.config.document import GatewaySpec
from gateway.config.loader import Loaded, load_config
from gateway.config.models import BackendSpec
from gateway.config.settings import Settings
from gateway.errors import ConfigError
from gateway.policies.cache import Caches
from gateway.policies.chain import Resilience
from gateway.policies.metrics import PolicyMetrics
from gateway.web.guard_metrics import GuardMetrics
from gateway.web.guards import Guards, open_guards
from gateway.web.health import Health
from gateway.web.ratelimit.shared import redis_client

log = logging.getLogger("gateway.reload")


def config_hash(data: object) -> str:
    """A short digest of a config as it runs (values expanded, includes merged, defaults
    filled in: the validated model's)."""
    encoded = orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(encoded).hexdigest()[:12]


@dataclass(eq=False, slots=True)
class OpenBackend:
    """One open backend, the stack that closes it, and the generations that use it."""

    spec: BackendSpec
    live: LiveBackend
    stack: AsyncExitStack
    users: set[int] = field(default_factory=set)


@dataclass(eq=False)
class Generation:
    """One config being served: its backends, policies, guards and routes."""

    number: int
    spec: GatewaySpec
    hash: str
    loaded_at: float
    backends: dict[str, OpenBackend]
    resilience: Resilience
    guards: Guards
    guard_stack: AsyncExitStack | None
    """The guards' resources, when this generation opened its own (else inherited)."""
    routes: list[BaseRoute] = field(default_factory=list)
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    cache_redis: Redis | None = None
    """The Redis its `store: redis` caches use (`cluster.redis`; None: none)."""

    def __repr__(self) -> str:
        return f"<Generation {self.number} {self.hash} [{self.in_flight} in flight]>"

    @property
    def live(self) -> dict[str, LiveBackend]:
        return {name: entry.live for name, entry in self.backends.items()}

    def counted(self, app: ASGIApp) -> ASGIApp:
        """`app` (a route's), counting its requests in flight on this generation: a streamed
        answer counts until its last byte, not only until its handler returned."""

        async def counting(scope: Scope, receive: Receive, send: Send) -> None:
            self.in_flight += 1
            self.idle.clear()
            try:
                await app(scope, receive, send)
            finally:
                self.in_flight -= 1
                if self.in_flight == 0:
                    self.idle.set()

        return counting


RouteBuilder = Callable[[Generation], list[Route]]
"""Builds a generation's routes from its spec, backends, policies and guards (web/app.py)."""


class ConfigMetrics:
    """What /metrics says of the config: which one runs, and how reloads went."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.info = Gauge(
            "gateway_config_info",
            "The config being served (1), by hash.",
            ["hash"],
            registry=registry,
        )
        self.loaded = Gauge(
            "gateway_config_loaded_timestamp_seconds",
            "When the config being served was loaded (Unix time).",
            registry=registry,
        )
        self.reloads = Counter(
            "gateway_config_reloads",
            "Reloads, by outcome (ok, invalid).",
            ["outcome"],
            registry=registry,
        )
        self.failures = Counter(
            "gateway_config_reload_failures",
            "Reloads refused because the file was invalid, by the file's hash.",
            ["hash"],
            registry=registry,
        )


class Runtime:
    """The app's generations: the first built at start-up, the next ones by `reload`."""

    def __init__(
        self,
        *,
        settings: Settings,
        app_stack: AsyncExitStack,
        registry: CollectorRegistry,
        health: Health,
        caches: Caches,
        policy_metrics: PolicyMetrics,
        guard_metrics: GuardMetrics,
        build_routes: RouteBuilder,
        install: Callable[[Generation], None],
        background_settled: Callable[[float], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.app_stack = app_stack
        self.registry = registry
        self.health = health
        self.caches = caches
        self.policy_metrics = policy_metrics
        self.guard_metrics = guard_metrics
        self.build_routes = build_routes
        self.install = install
        self.background_settled = background_settled
        self.shared: dict[str, object] = {}
        self.metrics = ConfigMetrics(registry)
        self.current: Generation | None = None
        self.retiring: set[asyncio.Task[None]] = set()
        self.files: tuple[str, ...] = ()
        self._count = 0
        self._lock = asyncio.Lock()
        self._scheduled: asyncio.Task[bool] | None = None
        self._cache_redis_url: str | None = None

    def __repr__(self) -> str:
        return f"<Runtime {self.current!r} [{len(self.retiring)} retiring]>"

    async def start(self, spec: GatewaySpec) -> Generation:
        """Build and serve the first generation (start-up)."""
        generation = await self._build(spec, config_hash(spec.model_dump(mode="json")))
        self._activate(generation)
        return generation

    def request_reload(self) -> None:
        """Schedule a reload (from a signal handler or a watcher); one runs at a time."""
        if self._scheduled is None or self._scheduled.done():
            self._scheduled = asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> bool:
        """Load, check and serve the routes file again; False when it was refused."""
        path = self.settings.config
        async with self._lock:
            if path is None:
                log.warning("reload ignored: the routes file's path is unknown (GATEWAY_CONFIG)")
                return False
            try:
                loaded: Loaded = await asyncio.to_thread(load_config, path)
            except ConfigError as exc:
                digest = _file_hash(path)
                first = exc.problems[0] if exc.problems else str(exc)
                more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
                log.error(
                    "config %s refused, still serving %s: %s%s",
                    digest,
                    self.current.hash if self.current else "-",
                    first,
                    more,
                )
                self.metrics.reloads.labels("invalid").inc()
                self.metrics.failures.labels(digest).inc()
                return False
            self.files = loaded.files
            previous = self.current
            digest = config_hash(loaded.spec.model_dump(mode="json"))
            generation = await self._build(loaded.spec, digest, previous)
            self._activate(generation)
            self.metrics.reloads.labels("ok").inc()
            log.info(
                "config reloaded: %s -> %s (generation %d)",
                previous.hash if previous else "-",
                generation.hash,
                generation.number,
            )
            if previous is not None:
                task = asyncio.get_running_loop().create_task(self._retire(previous))
                self.retiring.add(task)
                task.add_done_callback(self.retiring.discard)
            return True

    async def wait_retired(self) -> None:
        """Wait for every retiring generation (shutdown)."""
        while self.retiring:
            await asyncio.gather(*self.retiring, return_exceptions=True)

    async def _build(
        self, spec: GatewaySpec, digest: str, previous: Generation | None = None
    ) -> Generation:
        self._count += 1
        number = self._count
        backends: dict[str, OpenBackend] = {}
        inherited = {}
        kept = previous.backends if previous is not None else {}
        opened: list[OpenBackend] = []
        try:
            for name in opening_order(spec.backends):
                backend_spec = spec.backends[name]
                old = kept.get(name)
                if old is not None and old.spec == backend_spec:
                    backends[name] = old
                    assert previous is not None
                    inherited[name] = previous.resilience.backends[name]
                    continue
                entry = await self._open(name, backend_spec)
                opened.append(entry)
                backends[name] = entry
            for entry in backends.values():
                entry.users.add(number)
            live = {name: entry.live for name, entry in backends.items()}
            resilience = Resilience(live, self.policy_metrics, self.caches, inherited)
            guards, guard_stack = await self._guards(spec, live, previous, set(inherited))
        except BaseException:
            for entry in opened:  # a reload that failed to open: what it opened is closed
                await entry.stack.aclose()
            raise
        if previous is not None:
            # an unchanged backend keeps its caches; a changed or removed one loses them
            gone = {n for n in previous.backends if n not in inherited}
            self.caches.forget(gone)
        self._cluster_cache(spec.cluster.redis)
        generation = Generation(
            number, spec, digest, time.time(), backends, resilience, guards, guard_stack
        )
        generation.cache_redis = self.caches.redis
        generation.routes = [*self._counted(generation, self.build_routes(generation))]
        return generation

    def _cluster_cache(self, url: str | None) -> None:
        """The Redis of `store: redis` caches, for routes built from now on: a new client
        when `cluster.redis` changed (it connects when first used; the old one is closed
        when the last generation using it retires)."""
        if url == self._cache_redis_url and (url is None) == (self.caches.redis is None):
            return
        self._cache_redis_url = url
        self.caches.redis = (
            None
            if url is None
            else redis_client(
                url, self.settings.redis_timeout_seconds, self.settings.redis_max_connections
            )
        )

    def _counted(self, generation: Generation, routes: Sequence[Route]) -> list[Route]:
        for route in routes:
            route.app = generation.counted(route.app)
        return list(routes)

    async def _open(self, name: str, spec: BackendSpec) -> OpenBackend:
        stack = await self.app_stack.enter_async_context(AsyncExitStack())
        context = OpenContext(stack, self.settings, self.registry, self.shared, self.app_stack)
        try:
            live = await open_backend(name, spec, context)
        except BaseException:
            await stack.aclose()
            raise
        return OpenBackend(spec, live, stack)

    async def _guards(
        self,
        spec: GatewaySpec,
        live: Mapping[str, LiveBackend],
        previous: Generation | None,
        unchanged: set[str],
    ) -> tuple[Guards, AsyncExitStack | None]:
        """The previous generation's guards when nothing they stand on changed, else new."""
        if previous is not None and _same_edge(previous.spec, spec, unchanged):
            return replace(previous.guards, spec=spec, _cors={}), None
        stack = await self.app_stack.enter_async_context(AsyncExitStack())
        context = OpenContext(stack, self.settings, self.registry, self.shared, self.app_stack)
        try:
            guards = await open_guards(
                spec, self.settings, context, live, self.health, self.guard_metrics
            )
        except BaseException:
            await stack.aclose()
            raise
        return guards, stack

    def _activate(self, generation: Generation) -> None:
        previous = self.current
        self.current = generation
        self.install(generation)
        for name, entry in generation.backends.items():
            if entry.live.readiness is not None:
                self.health.checks[f"{entry.live.kind}:{name}"] = entry.live.readiness
        if previous is not None:
            names = {f"{e.live.kind}:{n}" for n, e in generation.backends.items()}
            for name, entry in previous.backends.items():
                check = f"{entry.live.kind}:{name}"
                if check not in names:
                    self.health.checks.pop(check, None)
            self.metrics.info.remove(previous.hash)
        self.metrics.info.labels(generation.hash).set(1)
        self.metrics.loaded.set(generation.loaded_at)
        loaded_at = datetime.fromtimestamp(generation.loaded_at, UTC).isoformat()

        async def config() -> dict[str, object]:
            return {
                "hash": generation.hash,
                "generation": generation.number,
                "loaded_at": loaded_at,
            }

        self.health.checks["config"] = config

    async def _retire(self, old: Generation) -> None:
        """Close what only `old` used, once its requests (and background calls) are done."""
        limit = self.settings.graceful_timeout_seconds
        log.info("generation %d retiring: %d requests in flight", old.number, old.in_flight)
        try:
            if old.in_flight:
                await asyncio.wait_for(old.idle.wait(), limit)
            await self.background_settled(limit)
        except TimeoutError:
            log.warning(
                "generation %d: requests still in flight after %gs; closing its backends anyway",
                old.number,
                limit,
            )
        for name, entry in old.backends.items():
            entry.users.discard(old.number)
            if not entry.users:
                log.info("backend %s: closing (no longer in the config)", name)
                await entry.stack.aclose()
        if old.guard_stack is not None and (
            self.current is None or self.current.guards is not old.guards
        ):
            await old.guard_stack.aclose()
        if old.cache_redis is not None and old.cache_redis is not self.caches.redis:
            await old.cache_redis.aclose()  # `cluster.redis` changed since
        log.info("generation %d retired", old.number)


def _same_edge(old: GatewaySpec, new: GatewaySpec, unchanged: set[str]) -> bool:
    """Whether the guards of `old` can serve `new`: the same auth, limits and cluster, and
    every backend they use (API key stores) unchanged."""
    if (old.auth, old.rate_limits, old.cluster) != (new.auth, new.rate_limits, new.cluster):
        return False
    stores = {getattr(auth, "store", None) for auth in new.auth.values()} - {None}
    return all(store in unchanged for store in stores)


def _file_hash(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    except OSError:
        return "unreadable"
