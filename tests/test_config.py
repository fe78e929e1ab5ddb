"""Config validation: every bad config gets one precise line per problem, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import schema_text
from gateway.config.loader import parse_spec
from gateway.config.models import ResilienceSpec
from gateway.config.values import parse_duration
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
BACKENDS = """
backends:
  catalog: {kind: http, url: "http://127.0.0.1:8101"}
  reviews: {kind: http, url: "http://127.0.0.1:8102"}
"""

BAD_CONFIGS = [
    (
        "endpoints: [{path: /a, calls: [{backend: catlog}]}]",
        "endpoints[0].calls[0].backend: unknown backend 'catlog' (known: catalog, reviews)",
    ),
    (
        "endpoints: [{path: /a, calls: [{backend: catalog, tiemout: 1s}]}]",
        "endpoints[0].calls[0].tiemout: unknown field",
    ),
    (
        "endpoints: [{path: /a, calls: [{backend: catalog, timeout: soon}]}]",
        "endpoints[0].calls[0].timeout: 'soon' is not a duration",
    ),
    (
        "endpoints: [{path: /a, calls: [{backend: catalog, timeout: -1}]}]",
        "endpoints[0].calls[0].timeout: Input should be greater than 0",
    ),
    (
        "endpoints: [{path: /a, calls: [{name: x, backend: catalog}, {name: x, backend: reviews}]}]",
        "endpoints[0].calls[1].name: duplicate call name 'x'",
    ),
    (
        "endpoints: [{path: /a, calls: [{name: x, backend: catalog, needs: [y]}]}]",
        "endpoints[0].calls[0].needs: unknown call 'y' (calls: x)",
    ),
    (
        "endpoints: [{path: /a, calls: [{name: x, backend: catalog, needs: [y]}, "
        "{name: y, backend: catalog, needs: [x]}]}]",
        "endpoints[0].calls: `needs` cycle: x -> y -> x",
    ),
    (
        'endpoints: [{path: "/a/{id}", calls: [{backend: catalog, path: "/p/{idd}"}]}]',
        "endpoints[0].calls[0].path: {idd}: the endpoint path has no parameter 'idd'",
    ),
    (
        'endpoints: [{path: /a, calls: [{name: x, backend: catalog}, {backend: catalog, path: "/p/{calls.x.id}"}]}]',
        "endpoints[0].calls[1].path: {calls.x.id}: add 'x' to `needs` to use its result",
    ),
    (
        'endpoints: [{path: /a, calls: [{backend: catalog, path: "/p/{oops"}]}]',
        "endpoints[0].calls[0].path: unbalanced '{'",
    ),
    (
        "endpoints: [{path: /a, calls: [{backend: catalog, allow: [a], deny: [b]}]}]",
        "endpoints[0].calls[0]: give `allow` or `deny`, not both",
    ),
    (
        "endpoints: [{path: /a}]",
        "endpoints[0]: give either `calls` or `proxy`, not both and not neither",
    ),
    (
        "endpoints: [{path: /a, forward_headers: [Connection], calls: [{backend: catalog}]}]",
        "endpoints[0].forward_headers: 'Connection' is hop-by-hop",
    ),
    (
        "endpoints: [{path: /a, calls: [{backend: catalog}]}, {path: /a, calls: [{backend: reviews}]}]",
        "endpoints[1].path: same route as endpoints[0] (GET)",
    ),
    (
        'endpoints: [{path: "/p/{rest:path}", proxy: {backend: nope, path: "/{rest}"}}]',
        "endpoints[0].proxy.backend: unknown backend 'nope' (known: catalog, reviews)",
    ),
    (
        "endpoints: [{path: no-slash, calls: [{backend: catalog}]}]",
        "endpoints[0].path: String should match pattern '^/'",
    ),
    (
        'endpoints: [{path: /a, calls: [{backend: catalog, headers: {"x note": v}}]}]',
        "endpoints[0].calls[0].headers: 'x note' is not a header name",
    ),
    (
        'endpoints: [{path: /a, calls: [{backend: catalog, headers: {x-note: "a\\r\\nX-Evil: 1"}}]}]',
        "endpoints[0].calls[0].headers.x-note: a header cannot carry control characters",
    ),
]


@pytest.mark.parametrize(("body", "expected"), BAD_CONFIGS)
def test_bad_config_names_file_field_and_reason(body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_spec("version: 1\n" + BACKENDS + body, "demo.yaml")
    assert any(line.startswith(f"demo.yaml: {expected}") for line in caught.value.problems), (
        caught.value.problems
    )


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("{kind: http}", "backends.c: give exactly one of `url` or `urls`"),
        ('{kind: http, url: "ftp://x"}', "backends.c.url: 'ftp://x' is not an http:// or https://"),
        ('{kind: http, url: "http://x", max_connections: 0}', "backends.c.max_connections:"),
        ('{kind: http, url: "http://x", max_response: 0}', "backends.c.max_response:"),
        ('{kind: http, url: "http://x", max_response: lots}', "backends.c.max_response:"),
        ('{kind: smtp, url: "http://x"}', "backends.c"),
    ],
)
def test_bad_backend(backend: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_spec(f"version: 1\nbackends:\n  c: {backend}\n", "f.yaml")
    assert any(line.startswith(f"f.yaml: {expected}") for line in caught.value.problems)


def test_yaml_syntax_error_gives_line_and_column() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_spec("version: 1\nbackends: {a: [\n", "x.yaml")
    assert caught.value.problems[0].startswith("x.yaml:3:1: YAML syntax error")


def test_defaults_and_names_are_resolved() -> None:
    spec = parse_spec(
        "version: 1\n" + BACKENDS + "endpoints: [{path: /a, calls: [{backend: catalog, group: g}, "
        "{backend: reviews}]}]",
        "ok.yaml",
    )
    endpoint = spec.endpoints[0]
    assert [c.name for c in endpoint.calls] == ["g", "call1"]
    assert endpoint.method == "GET" and endpoint.timeout == 5.0
    assert spec.backends["catalog"].timeout == 2.0


RESILIENT = """
version: 1
backends:
  reviews:
    kind: http
    url: http://127.0.0.1:8102
    retry: {attempts: 3, backoff: 50ms, max_backoff: 1s, on: [connect, timeout, 502, 503, 504], budget: 20%}
    breaker: {failures: 5, window: 10s, cooldown: 5s}
    concurrency: 100
    hedge: {after: 100ms, max: 1}
    coalesce: true
endpoints:
  - path: /a
    calls:
      - {backend: reviews, required: yes, query: {lang: no, country: NO, flag: on}}
"""


def test_resilience_settings_as_the_docs_write_them() -> None:
    spec = parse_spec(RESILIENT, "r.yaml")
    backend = spec.backends["reviews"]
    assert isinstance(backend, ResilienceSpec)  # the http kind's model has the policy fields
    assert backend.kind == "http" and backend.retry and backend.breaker and backend.hedge
    assert backend.retry.on == ["connect", "timeout", 502, 503, 504]
    assert (backend.retry.backoff, backend.retry.budget) == (0.05, 0.2)
    assert (backend.breaker.window, backend.hedge.after) == (10.0, 0.1)
    assert backend.concurrency == 100 and backend.coalesce
    # YAML 1.2 booleans: `on`, `no`, `NO` stay strings (only a bool field reads "yes" as true)
    call = spec.endpoints[0].calls[0]
    assert call.required is True
    assert call.query == {"lang": "no", "country": "NO", "flag": "on"}


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("2s", 2.0), (3, 3.0), ("1.5", 1.5), ("1m", 60.0)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_check_command_prints_problems_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "demo.yaml"
    bad.write_text(
        "version: 1\n" + BACKENDS + "endpoints: [{path: /a, calls: [{backend: catlog}]}]\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"{bad}: endpoints[0].calls[0].backend: unknown backend 'catlog' (known: catalog, reviews)"
    )
    assert "Traceback" not in result.stderr


def test_check_command_accepts_the_demo() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "examples/demo.yaml"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, "JWT_SECRET": "k" * 32},  # the demo sets it; so does a Secret in k8s
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("examples/demo.yaml: ok:")


def test_readme_config_reference_is_a_valid_config(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    reference = readme.split("## Config reference", 1)[1].split("```yaml\n", 1)[1]
    config = tmp_path / "reference.yaml"
    config.write_text(reference.split("```", 1)[0], encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(config)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_schema_is_up_to_date() -> None:
    committed = (REPO / "gateway" / "schema.json").read_text()
    assert committed == schema_text(), "run `gateway schema > gateway/schema.json`"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("routes: []", "routes: unknown field (did you mean 'endpoints'?)"),
        ("services: {}", "services: unknown field (did you mean 'backends'?)"),
        (
            "endpoints: [{path: /a, calls: [{backend: catalog, tiemout: 1s}]}]",
            "endpoints[0].calls[0].tiemout: unknown field (did you mean 'timeout'?)",
        ),
        (
            "endpoints: [{path: /a, calls: [{backend: catalog, targte: items}]}]",
            "endpoints[0].calls[0].targte: unknown field (did you mean 'target'?)",
        ),
        (
            'backends: {x: {kind: http, urll: "http://h"}}',
            "backends.x.urll: unknown field (did you mean 'url'?)",
        ),
        (
            "backends: {x: {kind: legacy, traget: 'services.pricing:bundle_offer'}}",
            "backends.x.traget: unknown field (did you mean 'target'?)",
        ),
        ("zzzz: 1", "zzzz: unknown field"),
    ],
)
def test_unknown_fields_suggest_the_nearest_valid_key(body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_spec("version: 1\n" + body, "f.yaml")
    lines = caught.value.problems
    assert f"f.yaml: {expected}" in lines, lines
    if "did you mean" not in expected:
        assert not any("did you mean" in line for line in lines), lines


def test_aliases_are_capped() -> None:
    anchors = "x: &a {}\n" + "".join(f"y{i}: *a\n" for i in range(20_000))
    with pytest.raises(ConfigError) as caught:
        parse_spec(anchors, "aliases.yaml")
    assert caught.value.problems == [
        next(p for p in caught.value.problems if "more than 10000 aliases" in p)
    ]


def test_a_file_whose_aliases_expand_exponentially_is_refused_unexpanded() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        levels.append(f"a{level}: &a{level} [{refs}]")
    with pytest.raises(ConfigError) as caught:
        parse_spec("\n".join(levels) + "\n", "laughs.yaml")
    assert caught.value.problems == ["laughs.yaml: aliases expand the file past 2,000,000 values"]


def test_a_huge_duration_is_refused_without_being_matched() -> None:
    # `"1" + spaces + "x"` backtracked quadratically in the old pattern
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration("1" + " " * 10_000_000 + "x")
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration("1" + " " * 50 + "x")


def test_check_output_is_capped(tmp_path: Path) -> None:
    bad = tmp_path / "many.yaml"
    calls = ", ".join("{backend: nope}" for _ in range(500))
    bad.write_text("version: 1\nendpoints: [{path: /a, calls: [" + calls + "]}]\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and len(lines) == 51
    assert lines[-1].startswith("... and ") and lines[-1].endswith(" more problems")


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "fanout 0.1.0"
