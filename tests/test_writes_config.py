"""The write side of the contract without servers: every new mistake is one line naming the
file, the field and why; body templates render typed JSON; what counts as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.config.loader import parse_spec
from gateway.engine.bodies import ForwardBody, JsonBody, is_json, plan_body, reads_body
from gateway.engine.context import RawBody
from gateway.errors import ConfigError, MissingValue

BACKENDS = """
version: 1
backends:
  catalog: {kind: http, url: "http://127.0.0.1:8101"}
  db: {kind: postgres, dsn: "postgresql://x@127.0.0.1:1/x"}
"""
POST = "endpoints: [{path: /a, method: POST, calls: "

BAD = [
    (
        'endpoints: [{path: /a, calls: [{backend: catalog, path: "/p/{body.x}"}]}]',
        "endpoints[0].calls[0].path: {body.x}: GET and HEAD requests carry no body to read",
    ),
    (
        'endpoints: [{path: /a, method: HEAD, calls: [{backend: db, sql: "SELECT $1", params: ["{body.x}"]}]}]',
        "endpoints[0].calls[0].params[0]: {body.x}: GET and HEAD requests carry no body",
    ),
    (
        "endpoints: [{path: /a, request: {}, calls: [{backend: catalog}]}]",
        "endpoints[0].request: GET requests carry no body to read",
    ),
    (
        POST + "[{backend: catalog, body: forward}]}]",
        "endpoints[0].calls[0].body: a GET call sends no body: give it `method: POST`",
    ),
    (
        "endpoints: [{path: /a, calls: [{backend: catalog, method: POST, body: forward}]}]",
        "endpoints[0].calls[0].body: `forward` sends the client's body: GET has none",
    ),
    (
        POST + '[{backend: db, sql: "SELECT 1", body: forward}]}]',
        "endpoints[0].calls[0].body: not used by a postgres backend ('db'): only http backends'",
    ),
    (
        POST + '[{backend: db, sql: "SELECT 1", pass_errors: true}]}]',
        "endpoints[0].calls[0].pass_errors: not used by a postgres backend ('db')",
    ),
    (
        POST + "[{backend: catalog, background: true, required: true}]}]",
        "endpoints[0].calls[0].background: runs after the response: it cannot be `required`",
    ),
    (
        POST
        + "[{name: bg, backend: catalog, background: true}, {backend: catalog, needs: [bg]}]}]",
        "endpoints[0].calls[1].needs: 'bg' runs in the background, after the response: only "
        "background calls may need it",
    ),
    (
        POST + "[{backend: catalog, background: true, pass_errors: true}]}]",
        "endpoints[0].calls[0].pass_errors: a background call never decides the answer",
    ),
    (
        POST + '[{backend: db, sql: "SELECT 1", result: stream, background: true}]}]',
        "endpoints[0].calls[0].background: a `stream` call is the answer: not in the background",
    ),
    (
        POST + '[{backend: catalog, method: POST, body: {order: "{calls.x.id}"}}]}]',
        "endpoints[0].calls[0].body.order: {calls.x.id}: add 'x' to `needs` to use its result",
    ),
    (
        POST + '[{backend: catalog, method: POST, body: {lines: [1, "{oops"]}}]}]',
        "endpoints[0].calls[0].body.lines[1]: unbalanced '{'",
    ),
    (
        POST + "[{backend: catalog, method: POST, body: {when: [{d: 2024-01-01}]}}]}]",
        "endpoints[0].calls[0].body.when[0].d: input was not a valid JSON value",
    ),
    (
        "endpoints: [{path: /a, method: POST, request: {schema: {type: 12}}, calls: [{backend: catalog}]}]",
        "endpoints[0].request.schema: not a valid JSON Schema: 12 is not valid under any of the "
        "given schemas (at type)",
    ),
    (
        "endpoints: [{path: /a, method: POST, request: {schema: missing.json}, calls: [{backend: catalog}]}]",
        "endpoints[0].request.schema: cannot read 'missing.json': No such file or directory",
    ),
    (
        'endpoints: [{path: /a, method: POST, request: {schema: {$ref: "https://x.example/s.json"}}, calls: [{backend: catalog}]}]',
        "endpoints[0].request.schema: $ref 'https://x.example/s.json' leaves the schema",
    ),
    (
        'endpoints: [{path: "/a/{rest:path}", method: POST, request: {}, proxy: {backend: catalog, path: "/{rest}"}}]',
        "endpoints[0].request: a proxy passes the body through as it is: no `request`",
    ),
    (
        "endpoints: [{path: /a, method: POST, request: {schma: x}, calls: [{backend: catalog}]}]",
        "endpoints[0].request.schma: unknown field (did you mean 'schema'?)",
    ),
]


@pytest.mark.parametrize(("body", "expected"), BAD)
def test_each_write_mistake_is_one_line(body: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_spec(BACKENDS + body, "shop.yaml", base=tmp_path)
    problems = caught.value.problems
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"shop.yaml: {expected}"), problems


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "is not JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"type": "nope"}', "not a valid JSON Schema"),
    ],
)
def test_a_bad_schema_file_is_one_line(text: str, problem: str, tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(text)
    body = POST + "[{backend: catalog}], request: {schema: s.json}}]"
    with pytest.raises(ConfigError) as caught:
        parse_spec(BACKENDS + body, "shop.yaml", base=tmp_path)
    (line,) = caught.value.problems
    assert line.startswith("shop.yaml: endpoints[0].request.schema: 's.json'") or line.startswith(
        "shop.yaml: endpoints[0].request.schema: not a valid"
    ), line
    assert problem in line


def test_writes_that_are_right_pass_and_keep_every_existing_default() -> None:
    spec = parse_spec(
        BACKENDS
        + POST
        + "[{name: w, backend: catalog, method: POST, body: forward, pass_errors: true},"
        + " {name: bg, backend: catalog, method: POST, needs: [w], background: true,"
        + ' body: {id: "{calls.w.id}", n: "{body.n}"}}]}]',
        "shop.yaml",
    )
    write, later = spec.endpoints[0].calls
    assert write.body == "forward" and write.pass_errors and not write.background
    assert later.background and later.body == {"id": "{calls.w.id}", "n": "{body.n}"}
    assert spec.endpoints[0].request is None
    assert reads_body(spec.endpoints[0].calls)
    assert not reads_body(spec.endpoints[0].calls[:1])


SOURCES: dict[str, Any] = {
    "body": {"total": 12.5, "items": [{"sku": 1}], "vip": False, "none": None, "c": {"n": "Ada"}},
    "calls": {"order": {"id": 7}},
    "path": {"id": "42"},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{body.total}", 12.5),
        ("{body.items}", [{"sku": 1}]),
        ("{body.vip}", False),
        ("{body.none}", None),
        ("{body.c}", {"n": "Ada"}),
        ("{calls.order.id}", 7),
        ("{id}", "42"),
        ("order {calls.order.id} for {body.c.n}", "order 7 for Ada"),
        ("{body.vip}!", "false!"),
        (
            {"a": ["{body.total}", {"b": "{calls.order.id}"}], "k": 1},
            {"a": [12.5, {"b": 7}], "k": 1},
        ),
        ([True, None, 1.5, "{{x}}"], [True, None, 1.5, "{x}"]),
    ],
)
def test_body_templates_render_typed_json(template: Any, expected: Any) -> None:
    body = plan_body(template)
    assert isinstance(body, JsonBody)
    data, content_type = body.render(SOURCES, None)
    assert orjson.loads(data) == expected and content_type == "application/json"


def test_a_template_without_refs_is_encoded_once() -> None:
    body = plan_body({"type": "ping", "n": [1, 2]})
    assert isinstance(body, JsonBody) and body.encoded == b'{"type":"ping","n":[1,2]}'


@pytest.mark.parametrize(
    "template", ["{body.missing}", "{body.c.n.deeper}", "x {body.items}", "{calls.nope.id}"]
)
def test_a_missing_or_non_text_value_fails_the_body(template: str) -> None:
    body = plan_body({"v": template})
    assert body is not None
    with pytest.raises(MissingValue):
        body.render(SOURCES, None)


def test_forward_sends_the_clients_bytes_and_type() -> None:
    body = plan_body("forward")
    assert isinstance(body, ForwardBody)
    assert body.render({}, RawBody(b"a,b\n", "text/csv")) == (b"a,b\n", "text/csv")
    assert body.render({}, None) == (b"", None)
    assert plan_body(None) is None


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/problem+json", True),
        ("application/vnd.api+json;v=2", True),
        ("text/json", False),
        ("application/jsonl", False),
        ("text/plain", False),
        ("", False),
        (None, False),
    ],
)
def test_what_counts_as_json(content_type: str | None, expected: bool) -> None:
    assert is_json(content_type) is expected
