"""The gateway's exception tree, all of it.

    GatewayError
    ├── ConfigError              the config file is invalid (carries one line per problem)
    │   ├── TemplateSyntaxError  a template cannot be parsed
    │   └── ImportPathError      a `module:attribute` does not name a usable object
    ├── DevServerError           a dev-only server (the demo's PostgreSQL) failed to start/stop
    ├── BadRequest               the client request cannot be served as sent (-> its `status`)
    │   ├── BodyTooLarge         the request body is over the endpoint's limit (-> 413)
    │   ├── Unauthorized         no credential, or one that does not verify (-> 401)
    │   ├── Forbidden            a valid credential without a scope or claim needed (-> 403)
    │   ├── TooManyRequests      a rate limit of the endpoint is used up (-> 429)
    │   ├── UnsupportedMediaType the endpoint reads a JSON body; this one is not JSON (-> 415)
    │   ├── BadJson              the body does not parse as JSON, or there is none (-> 400)
    │   └── SchemaViolation      the JSON body fails the endpoint's schema (-> 400, `errors`)
    ├── ProtocolRefusal          the HTTP server refuses a request before the app runs: a head
    │                            over a limit, too slow, no Host (-> 400/408/414/431, closed)
    └── CallError                an expected failure of one backend call (-> an Outcome, not a 500)
        ├── CallTimeout          the call's own timeout or the endpoint deadline passed
        ├── UpstreamUnavailable  connection refused/reset, DNS, pool closed
        ├── BadStatus            the upstream answered a non-2xx status (a 4xx keeps its JSON body)
        ├── BadBody              the upstream body is not JSON, or lacks the field the call picks
        │   └── ResponseTooLarge the upstream body is over the backend's `max_response`
        ├── MissingValue         the call's request cannot be built: a value it needs is absent
        ├── UnsafeValue          an upstream value would put control characters into a header
        ├── QueryFailed          the database refused the statement (an SQL error)
        ├── Refused              not sent, to protect the backend or the gateway (-> 503)
        │   ├── CircuitOpen      the backend's (or every host's) breaker is open
        │   └── BulkheadFull     the backend's `concurrency` cap is reached
        ├── FunctionFailed       a legacy client or compute function raised
        ├── NoRow                a `result: one` SQL call found no row (-> 404)
        ├── BadArgument          the database refused a bind value, e.g. out of range (-> 400)
        ├── Skipped              a call this one `needs` failed, so it never ran
        └── TooManyItems         a `for_each` list is longer than the call's `max_items`

Lower-layer errors (aiohttp, asyncpg, asyncio) are translated into these at the backend
boundary; anything else is a bug and becomes a 500 (logged once, with the request id).
A `CallError`'s message is what a client may read; what names internal hosts, URLs or a
library's own wording goes into its `details`, shown only with `error_details: true`.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """An invalid config file. `problems` holds one human-readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class TemplateSyntaxError(ConfigError):
    """A template that cannot be parsed; the message says where and why."""

    def __init__(self, message: str) -> None:
        super().__init__([message])


class ImportPathError(ConfigError):
    """An import path (`package.module:attribute`) that does not name a usable object."""

    def __init__(self, message: str) -> None:
        super().__init__([message])


class DevServerError(GatewayError):
    """A server the dev tools run (the embedded PostgreSQL) could not be set up or stopped."""


class BadRequest(GatewayError):
    """The client request cannot be served as sent; answered with `status` (default 400)."""

    status: int = 400


class BodyTooLarge(BadRequest):
    """The request body is larger than the endpoint's limit."""

    status = 413


class Unauthorized(BadRequest):
    """No credential, or one that does not verify: answered 401 with `WWW-Authenticate`.

    `error` is the RFC 6750 error code (`invalid_token`, `invalid_request`), or None when no
    credential was sent at all (then the challenge carries no error, as RFC 6750 3.1 says).
    """

    status = 401

    def __init__(self, message: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(message)
        self.error = error


class Forbidden(BadRequest):
    """A credential that verified but lacks a scope (or a claim) the endpoint needs: 403."""

    status = 403

    def __init__(self, message: str, *, scopes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.scopes = scopes


class TooManyRequests(BadRequest):
    """A rate limit of the endpoint is used up: 429 with `Retry-After` (whole seconds)."""

    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnsupportedMediaType(BadRequest):
    """The endpoint reads a JSON body and the client's Content-Type is not JSON."""

    status = 415


class BadJson(BadRequest):
    """The endpoint reads a JSON body and the client sent none, or one that does not parse."""


class SchemaViolation(BadRequest):
    """The JSON body does not match the endpoint's schema; `errors` holds one entry per
    failing place (`{"pointer": "#/items/0/quantity", "detail": ...}`, RFC 9457 style)."""

    def __init__(self, message: str, errors: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.errors = errors


class ProtocolRefusal(GatewayError):
    """Raised while parsing a request (gateway/server/protocol.py) to stop the parser; the
    protocol answers `status` itself and closes. `reason` labels the refusal's metric."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


class CallError(GatewayError):
    """An expected failure of one backend call; it becomes a failed Outcome.

    `details` says more for the operator (addresses, URLs, the library's message): answers
    carry it only for endpoints with `error_details: true`.
    """

    status: int | None = None
    details: str | None = None

    def __init__(
        self, message: str, *, status: int | None = None, details: str | None = None
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if details is not None:
            self.details = details


class CallTimeout(CallError):
    """The call did not finish within its timeout or the endpoint deadline."""


class UpstreamUnavailable(CallError):
    """The upstream could not be reached (refused, reset, DNS failure, pool closed)."""


class BadStatus(CallError):
    """The upstream answered with a status outside 2xx.

    For a 4xx answer whose body is JSON (and small enough, `GATEWAY_ERROR_BODY_BYTES`),
    `body` and `content_type` keep it, so a `pass_errors` call can hand it to the client.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.body = body
        self.content_type = content_type


class BadBody(CallError):
    """The upstream answered 2xx but the body is not usable JSON (or lacks the picked field)."""


class ResponseTooLarge(BadBody):
    """The upstream's body (decompressed) is larger than the backend's `max_response`; no
    more than that limit was read."""


class MissingValue(CallError):
    """A value the call's request needs is absent: a field of an earlier result, or a value
    of the client request that the call cannot go without."""


class UnsafeValue(CallError):
    """A value from an upstream result would put control characters (CR, LF...) into a
    header of the call's request; the call is not sent."""


class QueryFailed(CallError):
    """The database refused the statement (an SQL error that is not a bad bind value)."""


class Refused(CallError):
    """Refused without waiting: a full pool and queue, an open circuit, a full bulkhead.

    Decisive for an endpoint like a timeout is: the answer is 503 with `Retry-After`, since
    the gateway chose not to send the call and says when trying again makes sense.
    """

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CircuitOpen(Refused):
    """The circuit breaker of the backend (of every host of it) is open: failed without I/O.

    `retry_after` is the time until the next probe may go (at least 1 s).
    """


class BulkheadFull(Refused):
    """The backend already has `concurrency` calls in flight: failed at once, not queued."""


class FunctionFailed(CallError):
    """A legacy client or compute function raised; the message names the exception."""


class NoRow(CallError):
    """A `result: one` SQL call found no row; decisive for an endpoint, the answer is 404."""

    status = 404


class BadArgument(CallError):
    """The database refused a client's bind value (e.g. out of the column's range) -> 400."""

    status = 400


class Skipped(CallError):
    """The call was not made because a call it needs failed; `cause` names that call."""

    def __init__(self, message: str, *, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


class TooManyItems(CallError):
    """A `for_each` call's list has more elements than its `max_items`: nothing was sent."""
