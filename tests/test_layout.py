"""The shape of the code, checked: layers that do not import each other the wrong way, no
import cycles, and backend kinds as a seam (nothing outside gateway/backends/ asks which
kind a backend is)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GATEWAY = REPO / "gateway"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in GATEWAY.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file (functions and TYPE_CHECKING
    blocks included: a cycle hidden in a function is still a cycle)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return found


GRAPH = {
    name: {m for m in imports_of(path) if m in MODULES and m != name}
    for name, path in MODULES.items()
}


def find_cycle() -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return [*trail[trail.index(nxt) :], nxt] if nxt in trail else [*trail, node, nxt]
            if state.get(nxt) is None:
                cycle = visit(nxt, [*trail, node])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for name in sorted(GRAPH):
        if state.get(name) is None:
            cycle = visit(name, [])
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_cycles() -> None:
    assert len(GRAPH) > 40  # the walk found the package
    assert find_cycle() is None, " -> ".join(find_cycle() or [])


def test_the_engine_imports_no_web_client_or_database_library() -> None:
    engine = sorted(m for m in MODULES if m.startswith("gateway.engine"))
    probe = (
        "import importlib, sys\n"
        f"for name in {engine!r}: importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'aiohttp', 'asyncpg'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert len(engine) >= 5
    assert done.stdout.strip() == "[]", done.stdout


def test_only_the_backends_package_asks_which_kind_a_backend_is() -> None:
    pattern = re.compile(r"kind ==|isinstance\(.*Backend\)")
    outside = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for name, path in MODULES.items()
        if not name.startswith("gateway.backends")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert outside == []


def test_the_product_never_imports_the_demo_services_or_the_dev_tools() -> None:
    for name, path in MODULES.items():
        imported = imports_of(path)
        if not name.startswith("gateway.devtools"):
            assert not {m for m in imported if m.split(".")[0] == "services"}, name
        if name not in ("gateway.cli",) and not name.startswith("gateway.devtools"):
            assert not {m for m in imported if m.startswith("gateway.devtools")}, name
    assert not {m for m in imports_of(MODULES["gateway.devtools.demo"]) if m.startswith("services")}


def test_a_cycle_would_be_found() -> None:
    # the finder itself can fail: a two-module loop is reported
    GRAPH["gateway.types"].add("gateway.errors")
    GRAPH["gateway.errors"].add("gateway.types")
    try:
        assert find_cycle() is not None
    finally:
        GRAPH["gateway.types"].discard("gateway.errors")
        GRAPH["gateway.errors"].discard("gateway.types")


def test_every_package_directory_is_a_regular_package() -> None:
    # a directory without __init__.py is a namespace package: it imports from a checkout but
    # setuptools leaves it out of the wheel (and so out of the container image)
    directories = {path.parent for path in GATEWAY.rglob("*.py")}
    assert [d for d in directories if not (d / "__init__.py").exists()] == []
