"""What stands between a frontend and the backends, per endpoint: CORS, authentication and
rate limits, opened once in the app's lifespan and handed to each route as steps.

`open_guards` fetches the JWKS, prepares the API key tables and connects
to Redis, each registering its close on the app's exit stack and its state in /readyz.
`Guards.cors/auth/rate_limits(endpoint)` give the steps of one endpoint, in that order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from gateway.backends.http import client_session
from gateway.backends.live import LiveBackend, OpenContext
from gateway.config.document import GatewaySpec
from gateway.config.edge import (
    ApiKeyAuth,
    CorsSpec,
    JwtAuth,
)
from gateway.config.edge_checks import call_refs
from gateway.config.models import EndpointSpec
from gateway.config.settings import Settings
from gateway.engine.templates import Ref
from gateway.errors import CallError
from gateway.web.auth.api_keys import ApiKeyAuthenticator
from gateway.web.auth.cache import ExpiringCache
from gateway.web.auth.jwks import JwksKeys, file_loader, url_loader
from gateway.web.auth.keystore import KeyStore
from gateway.web.auth.step import Accepted, Authenticator, auth_step
from gateway.web.auth.tokens import JwtAuthenticator
from gateway.web.cors import CorsPolicy, cors_step, route_methods
from gateway.web.guard_metrics import GuardMetrics
from gateway.web.health import Health
from gateway.web.ratelimit.buckets import Limit, LocalBuckets
from gateway.web.ratelimit.leases import Leases
from gateway.web.ratelimit.shared import SharedBuckets, redis_client
from gateway.web.ratelimit.step import Limiter, ProcessLimiter, rate_limit_step
from gateway.web.steps import Step

log = logging.getLogger("gateway.guards")


@dataclass
class Guards:
    """The open authenticators and limiter of one app, and each endpoint's steps from them."""

    spec: GatewaySpec
    metrics: GuardMetrics
    authenticators: dict[str, Authenticator] = field(default_factory=dict)
    limits: dict[str, Limit] = field(default_factory=dict)
    limiter: Limiter | None = None
    _cors: dict[int, CorsPolicy] = field(default_factory=dict)

    def cors_policy(self, endpoint: EndpointSpec) -> CorsPolicy | None:
        spec = endpoint.cors or self.spec.cors
        return None if spec is None else self._policy(spec)

    def _policy(self, spec: CorsSpec) -> CorsPolicy:
        found = self._cors.get(id(spec))
        if found is None:
            found = self._cors[id(spec)] = CorsPolicy.from_spec(spec)
        return found

    def methods(self, endpoint: EndpointSpec, methods: Sequence[str]) -> list[str]:
        """The route's methods: OPTIONS too when the endpoint has CORS (preflights)."""
        return route_methods(methods, self.cors_policy(endpoint))

    def cors(self, endpoint: EndpointSpec, methods: Sequence[str]) -> list[Step]:
        policy = self.cors_policy(endpoint)
        if policy is None:
            return []
        by_method: dict[str, CorsPolicy] = {}
        for other in self.spec.endpoints:  # same path, other methods: their own settings
            found = self.cors_policy(other)
            if other.path == endpoint.path and found is not None:
                by_method.setdefault(other.method, found)
        return [cors_step(policy, by_method, "OPTIONS" in methods)]

    def auth(self, endpoint: EndpointSpec) -> list[Step]:
        if endpoint.auth is None:
            return []
        chain = [self.authenticators[name] for name in endpoint.auth.use]
        return [
            auth_step(
                chain,
                endpoint.auth.scopes,
                self._auth_refs(endpoint),
                endpoint.forward_headers,
                self.metrics,
            )
        ]

    def rate_limits(self, endpoint: EndpointSpec) -> list[Step]:
        if not endpoint.rate_limit or self.limiter is None:
            return []
        limits = [self.limits[name] for name in endpoint.rate_limit]
        return [rate_limit_step(self.limiter, limits, self.metrics)]

    def _auth_refs(self, endpoint: EndpointSpec) -> list[Ref]:
        refs = [ref for _, ref in call_refs(endpoint, "") if ref.source == "auth"]
        for name in endpoint.rate_limit:
            refs += [ref for ref in self.limits[name].key.refs if ref.source == "auth"]
        return list(dict.fromkeys(refs))


async def open_guards(
    spec: GatewaySpec,
    settings: Settings,
    context: OpenContext,
    live: Mapping[str, LiveBackend],
    health: Health,
    metrics: GuardMetrics | None = None,
) -> Guards:
    """Open what the config's `auth`, `rate_limits` and `cluster` need (see the module);
    `metrics` are the app's (a reload opens guards again on the same ones)."""
    guards = Guards(spec, metrics or GuardMetrics(context.registry))
    for name, auth in spec.auth.items():
        cache: ExpiringCache[Accepted] = ExpiringCache(settings.auth_cache_entries)
        guards.metrics.auth_cache.labels(name).set_function(cache.__len__)
        if isinstance(auth, JwtAuth):
            guards.authenticators[name] = await _open_jwt(
                name,
                auth,
                auth.secret.encode() if auth.secret is not None else None,
                cache,
                settings,
                context,
                guards.metrics,
                health,
            )
        else:
            guards.authenticators[name] = await _open_api_key(
                name, auth, cache, settings, spec, live
            )
    guards.limits = {name: Limit.from_spec(name, limit) for name, limit in spec.rate_limits.items()}
    if guards.limits:
        guards.limiter = await _open_limiter(spec, settings, context, guards, health)
    return guards


async def _open_jwt(
    name: str,
    auth: JwtAuth,
    secret: bytes | None,
    cache: ExpiringCache[Accepted],
    settings: Settings,
    context: OpenContext,
    metrics: GuardMetrics,
    health: Health,
) -> JwtAuthenticator:
    keys = None
    if secret is None:
        if auth.jwks_url is not None:
            session = client_session(context)
            load = url_loader(
                session, auth.jwks_url, settings.jwks_timeout_seconds, settings.jwks_max_bytes
            )
        else:
            assert auth.jwks_file is not None, "checked: one key source"
            load = file_loader(auth.jwks_file, settings.jwks_max_bytes)
        fetched = {ok: metrics.jwks_fetches.labels(name, "ok" if ok else "failed") for ok in (1, 0)}
        keys = JwksKeys(
            name,
            load,
            cache_seconds=auth.cache,
            refetch_seconds=settings.jwks_refetch_seconds,
            on_fetch=lambda ok: fetched[int(ok)].inc(),
        )
        await keys.start()
        context.stack.push_async_callback(keys.close)
        report = keys.report

        async def check() -> dict[str, object]:
            return report()

        health.checks[f"auth:{name}"] = check
    return JwtAuthenticator(
        name,
        auth,
        keys=keys,
        secret=secret,
        cache=cache,
        max_bytes=settings.auth_max_credential_bytes,
    )


async def _open_api_key(
    name: str,
    auth: ApiKeyAuth,
    cache: ExpiringCache[Accepted],
    settings: Settings,
    spec: GatewaySpec,
    live: Mapping[str, LiveBackend],
) -> ApiKeyAuthenticator:
    store = KeyStore(name, live[auth.store].call, spec.backends[auth.store].timeout)
    try:
        await store.ensure_table()
    except CallError as exc:  # created on the first lookup instead
        log.warning("auth %s: cannot prepare the keys table in %s yet: %s", name, auth.store, exc)
    return ApiKeyAuthenticator(
        name, auth, store=store, cache=cache, max_bytes=settings.auth_max_credential_bytes
    )


async def _open_limiter(
    spec: GatewaySpec, settings: Settings, context: OpenContext, guards: Guards, health: Health
) -> Limiter:
    local = LocalBuckets(settings.rate_limit_max_keys)
    for name in guards.limits:
        guards.metrics.rate_limit_keys.labels(name).set_function(partial(local.held, name))
    guards.metrics.fallback.set(0)
    url = spec.cluster.redis
    if url is None:
        log.info("rate limits are per process (no cluster.redis, or REDIS_URL unset)")
        return ProcessLimiter(local)
    shared = SharedBuckets(
        redis_client(url, settings.redis_timeout_seconds, settings.redis_max_connections),
        local,
        Leases(spec.cluster.lease, settings.rate_limit_max_keys),
        guards.metrics,
        timeout=settings.redis_timeout_seconds,
        connections=settings.redis_max_connections,
        retry_seconds=settings.redis_retry_seconds,
    )
    await shared.start()
    context.stack.push_async_callback(shared.close)

    async def check() -> dict[str, object]:
        return shared.report()

    health.checks["cluster:redis"] = check
    return shared
