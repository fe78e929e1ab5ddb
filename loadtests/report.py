"""The report folder of a run: PNG plots from locust's history CSV and the gateway samples,
and summary.md (environment, load profile, figures, verdict) that people can read.
"""

from __future__ import annotations

import csv
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from loadtests.figures import Figures
from loadtests.sampler import Sample

REPO = Path(__file__).resolve().parent.parent
PLOTS = ("latency.png", "throughput.png", "gateway.png")
VERSIONED = ("locust", "uvicorn", "uvloop", "httptools", "starlette", "aiohttp")


def _read_first_line(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=30
    )
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def environment(limits_before: tuple[int, int]) -> dict[str, str]:
    """Where the run happened, as label -> value."""
    cpu = "unknown"
    for line in _read_first_line("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    dirty = len([line for line in _git("status", "--porcelain").splitlines() if line])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in VERSIONED)
    return {
        "git commit": f"{_git('rev-parse', '--short', 'HEAD')} "
        f"({dirty} files changed in the working tree)",
        "machine": f"{platform.node()}, {platform.platform()}",
        "cpu": f"{os.cpu_count()} cores, {cpu}",
        "memory": f"{memory_gib:.1f} GiB",
        "python": sys.version.split()[0],
        "packages": versions,
        "open files (RLIMIT_NOFILE)": f"soft {limits_before[0]} raised to {soft} (hard {hard})"
        " for the runner and every process it starts",
        "net.core.somaxconn": _read_first_line("/proc/sys/net/core/somaxconn"),
        "ephemeral ports": _read_first_line("/proc/sys/net/ipv4/ip_local_port_range"),
    }


def _history(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r["Name"] == "Aggregated"]


def _value(text: str) -> float:
    return float("nan") if text in ("", "N/A") else float(text)


def _legend_below(fig: Figure) -> None:
    """One legend for every axis of the figure, under the plot where it hides no line."""
    fig.legend(loc="lower center", ncols=4, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))


def plot(history_csv: Path, samples: Sequence[Sample], out: Path, title: str) -> None:
    """latency.png, throughput.png (from locust's history) and gateway.png (from samples)."""
    rows = _history(history_csv)
    start = int(rows[0]["Timestamp"]) if rows else 0
    t = [int(r["Timestamp"]) - start for r in rows]

    fig, ax = plt.subplots(figsize=(10, 5))
    for column, label in (("50%", "p50"), ("95%", "p95"), ("99%", "p99")):
        ax.plot(t, [_value(r[column]) for r in rows], label=label)
    ax.set_xlabel("seconds")
    ax.set_ylabel("response time (ms), last 10 s window")
    users = ax.twinx()
    users.plot(t, [_value(r["User Count"]) for r in rows], "k--", label="users")
    users.set_ylabel("users")
    ax.set_title(f"{title}: latency percentiles and users")
    _legend_below(fig)  # after the title, so that the layout makes room for it
    fig.savefig(out / "latency.png", dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 5))
    ax.plot(t, [_value(r["Requests/s"]) for r in rows], label="requests/s")
    ax.plot(t, [_value(r["Failures/s"]) for r in rows], "r", label="failures/s")
    ax.set_xlabel("seconds")
    ax.set_ylabel("per second")
    ax.set_title(f"{title}: throughput and failures")
    _legend_below(fig)  # after the title, so that the layout makes room for it
    fig.savefig(out / "throughput.png", dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 5))
    st = [s.t_s for s in samples]
    for key, label in (
        ("in_flight", "requests in flight"),
        ("open_connections", "open client connections"),
        ("upstream_sockets", "upstream sockets"),
    ):
        points = [(s.t_s, getattr(s, key)) for s in samples if getattr(s, key) >= 0]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=label)
    ax.set_xlabel("seconds")
    ax.set_ylabel("count")
    rss = ax.twinx()
    rss.plot(st, [s.rss_bytes / 2**20 if s.rss_bytes >= 0 else float("nan") for s in samples])
    rss.lines[0].set(color="k", linestyle="--", label="RSS (MiB)")
    rss.set_ylabel("gateway RSS (MiB)")
    ax.set_title(f"{title}: the gateway process, sampled every second")
    _legend_below(fig)  # after the title, so that the layout makes room for it
    fig.savefig(out / "gateway.png", dpi=80)
    plt.close(fig)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _count(value: float | None) -> str:
    return "not measured" if value is None else f"{value:,.0f}"


def summary(
    *,
    out: Path,
    profile: str,
    why: str,
    command: str,
    env: Mapping[str, str],
    load: Mapping[str, str],
    figures: Figures,
    failed: Sequence[str],
    limits: Mapping[str, str],
    notes: Sequence[str],
) -> Path:
    """Write summary.md; returns its path."""
    verdict = "PASS" if not failed else "FAIL"
    t = figures.total
    lines = [
        f"# Capacity run `{profile}`: {verdict}",
        "",
        f"**Verdict: {verdict}**" + ("" if not failed else " (" + "; ".join(failed) + ")"),
        "",
        why,
        "",
        f"Run at {datetime.now(UTC):%Y-%m-%d %H:%M UTC} with:",
        "",
        "```sh",
        command,
        "```",
        "",
        "## Figures",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| requests | {t.requests:,} |",
        f"| failed requests | {t.failures:,} ({figures.failure_ratio:.4%}) |",
        f"| shed (503 + Retry-After, counted apart) | {figures.shed_count:,} |",
        *(
            []
            if figures.shed is None
            else [
                f"| shed 503 latency p50 / p99 / max (ms) | {_ms(figures.shed.p50)} / "
                f"{_ms(figures.shed.p99)} / {_ms(figures.shed.max_ms)} |",
                f"| admitted requests' p99 (worst route, ms) | {_ms(figures.admitted_p99)} |",
            ]
        ),
        f"| requests/s (whole run) | {t.rps:,.1f} |",
        f"| p50 / p95 / p99 / max (ms) | {_ms(t.p50)} / {_ms(t.p95)} / {_ms(t.p99)} / "
        f"{_ms(t.max_ms)} |",
        f"| gateway peak requests in flight | {_count(figures.peak_in_flight)} |",
        f"| gateway peak open client connections | {_count(figures.peak_connections)} |",
        f"| gateway peak upstream sockets (sampled) | {_count(figures.peak_upstream_sockets)} |",
        f"| gateway peak open file descriptors (sampled) | {_count(figures.peak_fds)} |",
        "| gateway peak RSS (sampled) | "
        + (
            "not measured"
            if figures.peak_rss_bytes is None
            else f"{figures.peak_rss_bytes / 2**20:,.0f} MiB"
        )
        + " |",
        "| the gateway's own answers by status (shed not included) | "
        + (
            "not read"
            if figures.answers is None
            else ", ".join(f"{s}: {n:,}" for s, n in figures.answers.items())
        )
        + " |",
        f"| request after the run (recovery) | {figures.recovery} |",
        "",
        "By request name (route template):",
        "",
        "| name | requests | failures | req/s | p50 | p95 | p99 | max (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| `{r.name}` | {r.requests:,} | {r.failures:,} | {r.rps:,.1f} | {_ms(r.p50)} | "
            f"{_ms(r.p95)} | {_ms(r.p99)} | {_ms(r.max_ms)} |"
            for r in figures.rows
        ),
        "",
        "## Checks",
        "",
        *(f"- {name}: {value}" for name, value in limits.items()),
        *(f"- **failed**: {f}" for f in failed),
        "",
        "## Plots",
        "",
        "![latency percentiles and users](latency.png)",
        "",
        "![requests/s and failures/s](throughput.png)",
        "",
        "![the gateway: in flight, connections, upstream sockets, RSS](gateway.png)",
        "",
        "## Load profile",
        "",
        *(f"- {name}: {value}" for name, value in load.items()),
        "",
        "## Environment",
        "",
        *(f"- {name}: {value}" for name, value in env.items()),
        "",
        "## Notes",
        "",
        *(f"- {n}" for n in notes),
        "",
        "Files: locust's `*_stats.csv`, `*_stats_history.csv`, `*_failures.csv`, "
        "`report.html`; `gateway_samples.csv` (one row per second: /metrics gauges, RSS, "
        "descriptors, CPU; upstream sockets every 5 s); the processes' logs.",
        "",
    ]
    path = out / "summary.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
