"""Config that composes: `${NAME}`, `${NAME:-default}`, `${file:...}` in any value, and
`include:` of other files, each problem located in its own file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.expand import expand
from gateway.config.loader import load_config, load_spec, parse_spec
from gateway.errors import ConfigError
from tests.processes import REPO

ENV = {"CATALOG": "http://catalog:8101", "EMPTY": "", "TOKEN": "t0k3n"}


@pytest.mark.parametrize(
    ("value", "expanded"),
    [
        ("${CATALOG}", "http://catalog:8101"),
        ("${CATALOG}/v1", "http://catalog:8101/v1"),
        ("${MISSING:-http://127.0.0.1:8101}", "http://127.0.0.1:8101"),
        ("${EMPTY:-fallback}", "fallback"),  # as in a shell: empty counts as unset for :-
        ("${EMPTY}", ""),
        ("$${CATALOG}", "${CATALOG}"),  # escaped
        ("Bearer ${TOKEN}", "Bearer t0k3n"),
        ("no references", "no references"),
        ("$5 and $", "$5 and $"),
    ],
)
def test_expansion(value: str, expanded: str) -> None:
    result = expand({"a": {"b": [value]}}, ENV, Path())
    assert result.problems == []
    assert result.data == {"a": {"b": [expanded]}}


def test_expanded_values_are_not_expanded_again() -> None:
    assert expand({"a": "${X}"}, {"X": "${TOKEN}"}, Path()).data == {"a": "${TOKEN}"}


def test_unset_and_malformed_references_name_their_field() -> None:
    result = expand({"backends": {"c": {"url": "${NOPE}"}}, "k": ["${a-b}"]}, ENV, Path())
    assert result.problems == [
        ("backends.c.url", "${NOPE} is not set (and has no default)"),
        ("k[0]", "${a-b}: not a variable name (use ${NAME})"),
    ]


CONFIG = """
version: 1
backends:
  catalog:
    kind: http
    url: ${CATALOG_URL:-http://127.0.0.1:8101}
endpoints:
  - path: /p/{id}
    calls:
      - backend: catalog
        path: /products/{id}
        headers: {authorization: "Bearer ${file:token.txt}"}
"""


def test_a_file_reads_the_environment_and_secret_files(tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("s3cret\n")
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    spec = load_spec(path, environ={"CATALOG_URL": "http://catalog.svc:8101"})
    assert spec.backends["catalog"].url == "http://catalog.svc:8101"  # type: ignore[attr-defined]
    assert spec.endpoints[0].calls[0].headers == {"authorization": "Bearer s3cret"}
    assert load_spec(path, environ={}).backends["catalog"].url == "http://127.0.0.1:8101"  # type: ignore[attr-defined]


def test_an_unreadable_secret_file_is_a_located_problem(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    with pytest.raises(ConfigError) as caught:
        load_spec(path, environ={})
    assert caught.value.problems == [
        f"{path}: endpoints[0].calls[0].headers.authorization: ${{file:token.txt}}: "
        "cannot read: No such file or directory"
    ]


def test_check_show_prints_the_resolved_config_with_secrets_masked(tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("s3cret\n")
    path = tmp_path / "gateway.yaml"
    path.write_text(
        CONFIG + "  - path: /db\n    calls: [{backend: db, sql: 'SELECT 1', result: value}]\n"
    )
    path.write_text(
        path.read_text().replace(
            "backends:\n", "backends:\n  db: {kind: postgres, dsn: '${DB}'}\n", 1
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--show", str(path)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "DB": "postgresql://app:hunter2@db:5432/app"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "url: http://127.0.0.1:8101" in done.stdout
    assert "dsn: postgresql://app:***@db:5432/app" in done.stdout
    assert "authorization: '***'" in done.stdout
    assert "s3cret" not in done.stdout and "hunter2" not in done.stdout


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


MAIN = """
version: 1
include: [backends.yaml, routes/*.yaml]
endpoints:
  - path: /home
    calls: [{backend: catalog, path: /products}]
"""


def test_included_files_merge_in_order(tmp_path: Path) -> None:
    write(tmp_path / "backends.yaml", "backends:\n  catalog: {kind: http, url: 'http://c:1'}\n")
    write(tmp_path / "routes/a.yaml", "endpoints: [{path: /a, calls: [{backend: catalog}]}]\n")
    write(tmp_path / "routes/b.yaml", "endpoints: [{path: /b, calls: [{backend: catalog}]}]\n")
    spec = load_spec(write(tmp_path / "gateway.yaml", MAIN), environ={})
    assert [e.path for e in spec.endpoints] == ["/home", "/a", "/b"]
    assert list(spec.backends) == ["catalog"]


def test_duplicates_across_files_name_both_files_and_fields(tmp_path: Path) -> None:
    write(
        tmp_path / "backends.yaml",
        "backends:\n  catalog: {kind: http, url: 'http://c:1'}\n",
    )
    a = write(
        tmp_path / "routes/a.yaml",
        "backends:\n  catalog: {kind: http, url: 'http://other:1'}\n"
        "endpoints: [{path: /x, calls: [{backend: catalog}]}]\n",
    )
    b = write(
        tmp_path / "routes/b.yaml",
        "endpoints:\n  - {path: /y, calls: [{backend: catalog}]}\n"
        "  - {path: /x, calls: [{backend: catalog}]}\n",
    )
    main = write(tmp_path / "gateway.yaml", MAIN)
    with pytest.raises(ConfigError) as caught:
        load_spec(main, environ={})
    assert caught.value.problems == [
        f"{a}: backends.catalog: also defined in {tmp_path / 'backends.yaml'}"
    ]
    a.write_text("endpoints: [{path: /x, calls: [{backend: catalog}]}]\n")
    with pytest.raises(ConfigError) as caught:
        load_spec(main, environ={})
    assert caught.value.problems == [
        f"{b}: endpoints[1].path: same route as {a} endpoints[0] (GET)"
    ]


def test_a_problem_in_an_included_file_is_located_there(tmp_path: Path) -> None:
    write(tmp_path / "backends.yaml", "backends:\n  catalog: {kind: http, url: 'http://c:1'}\n")
    routes = write(
        tmp_path / "routes/a.yaml",
        "endpoints:\n  - {path: /a, calls: [{backend: catalog}]}\n"
        "  - {path: /b, calls: [{backend: catlog, tiemout: 1s}]}\n",
    )
    main = write(tmp_path / "gateway.yaml", MAIN)
    with pytest.raises(ConfigError) as caught:
        load_spec(main, environ={})
    assert caught.value.problems == [
        f"{routes}: endpoints[1].calls[0].tiemout: unknown field (did you mean 'timeout'?)"
    ]
    routes.write_text("endpoints:\n  - {path: /b, calls: [{backend: catlog}]}\n")
    with pytest.raises(ConfigError) as caught:
        load_spec(main, environ={})
    assert caught.value.problems == [
        f"{routes}: endpoints[0].calls[0].backend: unknown backend 'catlog' (known: catalog)"
    ]


def test_an_include_that_matches_nothing_or_loops_is_a_problem(tmp_path: Path) -> None:
    main = write(tmp_path / "gateway.yaml", "version: 1\ninclude: [nothing/*.yaml, self.yaml]\n")
    write(tmp_path / "self.yaml", "include: [gateway.yaml]\n")
    with pytest.raises(ConfigError) as caught:
        load_spec(main, environ={})
    assert caught.value.problems == [
        f"{main}: include[0]: 'nothing/*.yaml' matches no file",
        f"{tmp_path / 'self.yaml'}: include[0]: {tmp_path / 'gateway.yaml'} is included twice",
    ]


def test_parse_spec_still_reads_one_text() -> None:
    spec = parse_spec(
        "version: 1\nbackends: {c: {kind: http, url: '${U:-http://h:1}'}}\n", "t.yaml"
    )
    assert spec.backends["c"].url == "http://h:1"  # type: ignore[attr-defined]


def test_load_config_keeps_the_merged_data(tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("s3cret")
    loaded = load_config(write(tmp_path / "g.yaml", CONFIG), environ={})
    assert loaded.secrets == frozenset({"s3cret"})
    assert loaded.data["backends"]["catalog"]["url"] == "http://127.0.0.1:8101"
