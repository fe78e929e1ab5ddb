"""Checks of the write side of an endpoint: its `request:` block, its calls' `body:`,
`background` and `pass_errors`, and the schema files the `request:` blocks name.

Called by `gateway.config.checks` (the per-endpoint rules) and `gateway.config.loader` (the
schema files, read relative to the routes file), so `gateway check` names every mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.config.models import EndpointSpec, Problem
from gateway.config.requests import load_schema
from gateway.config.values import BODYLESS_METHODS
from gateway.engine.bodies import FORWARD


def check_writes(endpoint: EndpointSpec, where: str) -> list[Problem]:
    """Problems of an endpoint's body and background rules (templates are checked with the
    call's other templates)."""
    problems: list[Problem] = []
    bodyless = endpoint.method in BODYLESS_METHODS
    if endpoint.request is not None:
        if endpoint.proxy is not None:
            problems.append(
                (f"{where}.request", "a proxy passes the body through as it is: no `request`")
            )
        elif bodyless:
            problems.append(
                (f"{where}.request", f"{endpoint.method} requests carry no body to read")
            )
    background = {call.name for call in endpoint.calls if call.background}
    for index, call in enumerate(endpoint.calls):
        at = f"{where}.calls[{index}]"
        if call.body == FORWARD and bodyless:
            problems.append(
                (f"{at}.body", f"`forward` sends the client's body: {endpoint.method} has none")
            )
        if call.background:
            if call.required:
                problems.append(
                    (f"{at}.background", "runs after the response: it cannot be `required`")
                )
            if call.pass_errors:
                problems.append((f"{at}.pass_errors", "a background call never decides the answer"))
            if call.result == "stream":
                problems.append(
                    (f"{at}.background", "a `stream` call is the answer: not in the background")
                )
        else:
            for need in call.needs:
                if need in background:
                    problems.append(
                        (
                            f"{at}.needs",
                            f"{need!r} runs in the background, after the response: "
                            "only background calls may need it",
                        )
                    )
    return problems


def load_schemas(
    endpoints: list[EndpointSpec], base_of: Callable[[int], Path]
) -> tuple[list[EndpointSpec], list[Problem]]:
    """The endpoints with every `request.schema` loaded (a file is read relative to
    `base_of(index)`, its endpoint's file's directory) and checked, and the problems of
    those that could not be."""
    loaded: list[EndpointSpec] = []
    problems: list[Problem] = []
    for index, endpoint in enumerate(endpoints):
        request = endpoint.request
        if request is None or request.json_schema is None:
            loaded.append(endpoint)
            continue
        try:
            schema = load_schema(request.json_schema, base_of(index))
        except ValueError as exc:
            problems.append((f"endpoints[{index}].request.schema", str(exc)))
            loaded.append(endpoint)
            continue
        updated = request.model_copy(update={"json_schema": schema})
        loaded.append(endpoint.model_copy(update={"request": updated}))
    return loaded, problems
