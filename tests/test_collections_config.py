"""`gateway check` on collections: one line naming file, field and why, for each mistake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.loader import parse_spec
from gateway.errors import ConfigError
from tests.flatmap_examples import EXAMPLES, MOVES, REFUSED_MOVES

REPO = Path(__file__).resolve().parent.parent
HEAD = """version: 1
backends:
  catalog: {kind: http, url: "http://127.0.0.1:8101"}
  db: {kind: postgres, dsn: "postgresql://u@127.0.0.1:1/d"}
endpoints:
  - path: /a/{id}
    calls:
      - {name: products, backend: catalog, path: /products, target: items}
"""


def problems(calls: str, endpoint_extra: str = "") -> list[str]:
    try:
        parse_spec(HEAD + calls + endpoint_extra, "c.yaml")
    except ConfigError as exc:
        return exc.problems
    return []


FIRST = "c.yaml: endpoints[0].calls[1]"

BAD = [
    ("{backend: catalog, for_each: products}", f"{FIRST}.for_each: name a list in an earlier"),
    ("{backend: catalog, for_each: calls.nope}", f"{FIRST}.for_each: unknown call 'nope'"),
    (
        "{name: me, backend: catalog, for_each: calls.me}",
        f"{FIRST}.for_each: for_each cannot name the call's own result",
    ),
    (
        "{backend: catalog, for_each: calls.products..x}",
        f"{FIRST}.for_each: 'calls.products..x': empty",
    ),
    (
        "{backend: catalog, for_each: calls.products.a*}",
        f"{FIRST}.for_each: 'calls.products.a*': `*` must",
    ),
    ("{backend: catalog, into: author}", f"{FIRST}.into: `into` is for `for_each` calls only"),
    ("{backend: catalog, concurrency: 3}", f"{FIRST}.concurrency: `concurrency` is for"),
    ("{backend: catalog, max_items: 3}", f"{FIRST}.max_items: `max_items` is for"),
    ("{backend: catalog, for_each: calls.products, concurrency: 0}", f"{FIRST}.concurrency: "),
    (
        "{backend: catalog, for_each: calls.products, into: a.*}",
        f"{FIRST}.into: 'a.*' names one field of each element: no `*`",
    ),
    (
        "{backend: catalog, for_each: calls.products, into: a, group: g}",
        f"{FIRST}.group: with `into` the results go inside 'products'",
    ),
    (
        '{backend: catalog, path: "/a/{item.author_id}"}',
        f"{FIRST}.path: {{item.author_id}}: `item` is the element of a `for_each` call",
    ),
    (
        '{backend: catalog, path: "/a/{calls.products.*.id}", needs: [products]}',
        f"{FIRST}.path: {{calls.products.*.id}} is a list: add |join:SEP",
    ),
    (
        '{backend: catalog, query: {x: "{calls.products.*.id|oops:1}"}, needs: [products]}',
        f"{FIRST}.query.x: {{calls.products.*.id|oops:1}}: unknown filter 'oops'",
    ),
    ("{backend: catalog, target: items.*.}", f"{FIRST}.target: 'items.*.': empty segment"),
    ("{backend: catalog, allow: [a.*b]}", f"{FIRST}.allow[0]: 'a.*b': `*` must"),
    ("{backend: catalog, deny: [ok, a..b]}", f"{FIRST}.deny[1]: 'a..b': empty segment"),
    (
        "{backend: catalog, join: {into: nope, on: id, key: pid, as: r}}",
        f"{FIRST}.join.into: unknown call 'nope'",
    ),
    (
        "{backend: catalog, join: {into: products, on: '*.id', key: pid, as: r}}",
        f"{FIRST}.join.on: '*.id' names one field of each element: no `*`",
    ),
    (
        "{backend: catalog, for_each: calls.products, join: {into: products, on: i, key: k, as: r}}",
        f"{FIRST}: give `for_each` or `join`, not both",
    ),
    ("{backend: catalog, shape: {del: ['a..b']}}", f"{FIRST}.shape.del[0]: 'a..b': empty"),
    ("{backend: catalog, shape: {append: {'x.*': [a]}}}", f"{FIRST}.shape.append.x.*: 'x.*'"),
    ("{backend: catalog, shape: [{sort: {by: '*.p'}}]}", f"{FIRST}.shape[0].sort.by: '*.p'"),
    ("{backend: catalog, shape: {limit: {n: -1}}}", f"{FIRST}.shape.limit.n: Input should be"),
    ("{backend: catalog, shape: {shuffle: {}}}", f"{FIRST}.shape.shuffle: unknown field"),
    (
        "{backend: catalog, shape: [{move: {}}, {delete: [a]}]}",
        f"{FIRST}.shape[1].delete: unknown field (did you mean 'del'?)",
    ),
    ("{backend: catalog, shape: 5}", f"{FIRST}.shape: Input should be a valid dictionary"),
]


@pytest.mark.parametrize(("call", "expected"), BAD)
def test_each_mistake_is_one_precise_line(call: str, expected: str) -> None:
    found = problems(f"      - {call}\n")
    assert any(line.startswith(expected) for line in found), found


def test_for_each_sources_must_be_earlier_calls() -> None:
    found = problems(
        "      - {name: first, backend: catalog, for_each: calls.later}\n"
        "      - {name: later, backend: catalog}\n"
    )
    assert (
        f"{FIRST}.for_each: 'later' is listed after this call: for_each needs an earlier call"
        in found
    )


def test_a_needs_cycle_through_an_implied_need_is_found() -> None:
    body = HEAD.replace("target: items}", "target: items, needs: [author]}")
    body += "      - {name: author, backend: catalog, for_each: calls.products}\n"
    with pytest.raises(ConfigError) as caught:
        parse_spec(body, "c.yaml")
    assert "c.yaml: endpoints[0].calls: `needs` cycle: products -> author -> products" in (
        caught.value.problems
    )


@pytest.mark.parametrize("result", ["one", "value"])
def test_a_single_row_is_not_a_list(result: str) -> None:
    found = problems(
        f"      - {{name: user, backend: db, sql: 'SELECT 1', result: {result}}}\n"
        "      - {backend: catalog, for_each: calls.user, into: x}\n"
    )
    assert (
        f"c.yaml: endpoints[0].calls[2].for_each: 'user' gives one value (`result: {result}`), not a list"
        in found
    )


def test_a_streamed_answer_is_not_shaped() -> None:
    found = problems(
        "      - {backend: db, sql: 'SELECT 1', result: stream, shape: {limit: {n: 1}}}\n",
        "    shape: {del: [a]}\n",
    )
    assert "c.yaml: endpoints[0].shape: a streamed (`result: stream`) answer is not shaped" in found
    assert (
        "c.yaml: endpoints[0].calls[1].shape: a `stream` call sends its rows as they come" in found
    )


def test_an_endpoint_shape_is_checked_too() -> None:
    found = problems("", "    shape: {move: {'a.*.b': 'c'}}\n")
    assert found == [
        "c.yaml: endpoints[0].shape.move.a.*.b: 'a.*.b' -> 'c': both sides need as many `*`s"
    ]


@pytest.mark.parametrize(("source", "target", "why"), REFUSED_MOVES)
def test_krakend_incorrect_moves_are_refused(source: str, target: str, why: str) -> None:
    found = problems(f"      - {{backend: catalog, shape: {{move: {{'{source}': '{target}'}}}}}}\n")
    assert len(found) == 1 and why in found[0], found
    assert found[0].startswith(f"{FIRST}.shape.move.{source}: '{source}' -> '{target}': ")


def test_krakend_correct_moves_and_examples_are_valid() -> None:
    moves = ", ".join(f"'{s}': '{t}'" for s, t, _ in MOVES)
    assert problems(f"      - {{backend: catalog, shape: {{move: {{{moves}}}}}}}\n") == []
    for _, spec, _ in EXAMPLES.values():
        assert problems(f"      - {{backend: catalog, shape: {json.dumps(spec)}}}\n") == []


def test_gateway_check_prints_one_line_per_collections_mistake(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + '      - {backend: catalog, path: "/a/{item.id}", concurrency: 3}\n')
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{bad}: endpoints[0].calls[1].path: {{item.id}}: `item` is the element of a `for_each`"
        " call; this call has none",
        f"{bad}: endpoints[0].calls[1].concurrency: `concurrency` is for `for_each` calls only",
    ]
