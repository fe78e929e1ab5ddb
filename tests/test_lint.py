"""The code standards, checked by the same test command as everything else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PYTHON_DIRS = [
    d for d in ("gateway", "services", "tests", "loadtests", "benchmarks") if (REPO / d).is_dir()
]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", *PYTHON_DIRS],
        ["ruff", "format", "--check", *PYTHON_DIRS],
        ["mypy", "--strict", *PYTHON_DIRS],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_code_standards(command: list[str]) -> None:
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
