"""The HTTP edge: the Starlette app, its handlers (aggregate, proxy, ndjson), per-route
steps, problems, the request id, shedding and health."""
