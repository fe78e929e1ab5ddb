"""The capacity runner end to end, at smoke size: `python -m loadtests.run --profile smoke`.

It starts the demo stack (with the suite's PostgreSQL, passed as DATABASE_URL), runs locust
headless, samples the gateway's /metrics and writes the report. The test checks that the
path works and the report folder is complete with a verdict, and that a violated SLO makes
the runner exit non-zero naming it. No timing targets: the verdict's SLOs are the runner's.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 180  # a hung run fails the test instead of the whole suite


def run(out: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtests.run", "--out", str(out), *args],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_smoke_profile_passes_and_writes_a_complete_report(
    tmp_path: Path, database_url: str
) -> None:
    out = tmp_path / "smoke"
    published = tmp_path / "published"
    result = run(out, database_url, "--profile", "smoke", "--publish", str(published))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "open files: soft limit" in result.stdout  # it says what it did to the limit

    for name in (
        "locust_stats.csv",
        "locust_stats_history.csv",
        "locust_failures.csv",
        "report.html",
        "gateway_samples.csv",
        "latency.png",
        "throughput.png",
        "gateway.png",
        "summary.md",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for png in ("latency.png", "throughput.png", "gateway.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), png

    # every route of the mix was requested, grouped by its template, none failed
    stats = {r["Name"]: r for r in rows(out / "locust_stats.csv")}
    for route in ("/api/products/{id}", "/api/home", "/api/catalog/{rest:path}", "/api/users/{id}"):
        assert int(stats[route]["Request Count"]) > 0, route
        assert int(stats[route]["Failure Count"]) == 0, route

    # the gateway's own gauges were read during the run
    samples = rows(out / "gateway_samples.csv")
    assert max(float(s["open_connections_peak"]) for s in samples) >= 300  # 300 users
    assert max(float(s["in_flight_peak"]) for s in samples) >= 1
    assert max(int(s["rss_bytes"]) for s in samples) > 0

    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("# Capacity run `smoke`: PASS")
    assert "**Verdict: PASS**" in summary
    for section in ("## Figures", "## Checks", "## Plots", "## Load profile", "## Environment"):
        assert section in summary, section
    assert "gateway peak open client connections" in summary
    answers = next(line for line in summary.splitlines() if "the gateway's own answers" in line)
    assert "200: " in answers and "| not read |" not in answers
    assert "git commit" in summary and "cores" in summary

    # --publish copies the small part only: no HTML, no per-second history
    assert sorted(p.name for p in published.iterdir()) == sorted(
        [
            "summary.md",
            "latency.png",
            "throughput.png",
            "gateway.png",
            "locust_stats.csv",
            "locust_failures.csv",
            "gateway_samples.csv",
        ]
    )


def test_a_violated_slo_fails_the_run_and_is_named(tmp_path: Path, database_url: str) -> None:
    out = tmp_path / "violated"
    result = run(
        out,
        database_url,
        "--profile",
        "smoke",
        "--users",
        "20",
        "--spawn-rate",
        "20",
        "--hold",
        "2",
        "--max-p99-ms",
        "0.001",  # no HTTP request answers in a microsecond
        "--min-peak-connections",
        "1000",  # 20 users cannot open 1,000 connections
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED max-p99-ms" in result.stderr
    assert "FAILED min-peak-connections" in result.stderr
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("# Capacity run `smoke`: FAIL")
    assert "max-p99-ms" in summary and "min-peak-connections" in summary
