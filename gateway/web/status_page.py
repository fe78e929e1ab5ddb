"""GET /status: one server-rendered HTML page, no external assets, that refreshes its live
part every `REFRESH_SECONDS` by fetching `/status/live` (the same rendering, as a fragment)
and swapping it in: no full reload, no client-side templates, works offline.

The routes are drawn as small SVG dependency graphs (endpoint -> calls -> the calls that
need them); below them, live: each backend's hosts with their breaker state and its pool
use, the last minute per endpoint and per call, and the recent failed requests.
"""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from gateway.observability.status import RouteNode, StatusData

REFRESH_SECONDS = 2

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#1d2330;background:#fafbfc}
h1{font-size:1.3em}h2{font-size:1.05em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0}td,th{padding:.25em .7em;border-bottom:1px solid #dde}
th{text-align:left;background:#eef1f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
.graphs{display:flex;flex-wrap:wrap;gap:1em}
.graph{background:#fff;border:1px solid #dde;padding:.4em}
.b{padding:.05em .5em;border-radius:.7em;font-size:.9em}
.closed{background:#d7f5dd;color:#13591f}.open{background:#fbd5d5;color:#8a1010}
.half_open{background:#fff0c2;color:#6b5000}.none{color:#889}
.state{font-weight:600}small{color:#667}
"""

_SCRIPT = """
const every = %d * 1000;
async function refresh() {
  try {
    const answer = await fetch('/status/live', {cache: 'no-store'});
    if (answer.ok) document.getElementById('live').innerHTML = await answer.text();
  } catch (e) { /* the gateway is restarting: keep the last view */ }
}
setInterval(refresh, every);
"""


class StatusPage:
    """The page and its live fragment, over the app's `StatusData`."""

    def __init__(self, data: StatusData | None = None) -> None:
        self.data = data
        """Set by the lifespan once the backends are open."""

    async def page(self, request: Request) -> HTMLResponse:
        routes = self.data.routes if self.data is not None else ()
        graphs = "".join(_graph(route) for route in routes)
        body = (
            "<!doctype html><html><head><meta charset='utf-8'><title>fanout status</title>"
            f"<style>{_STYLE}</style></head><body><h1>fanout gateway</h1>"
            f"<h2>Routes</h2><div class='graphs'>{graphs}</div>"
            f"<div id='live' data-refresh='{REFRESH_SECONDS}'>{self.fragment()}</div>"
            f"<script>{_SCRIPT % REFRESH_SECONDS}</script></body></html>"
        )
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    async def live(self, request: Request) -> HTMLResponse:
        return HTMLResponse(self.fragment(), headers={"Cache-Control": "no-store"})

    def fragment(self) -> str:
        """The live part: state, backends, the last minute, recent failures."""
        if self.data is None:
            return "<p>state: <span class='state' id='state'>starting</span></p>"
        now = self.data.snapshot()
        return (
            f"<p>state: <span class='state' id='state'>{escape(now['state'])}</span> "
            f"<small>(refreshes every {REFRESH_SECONDS}s; figures over the last minute)</small></p>"
            + _backends(now["backends"])
            + _traffic("Endpoints", ["endpoint"], now["endpoints"])
            + _traffic("Calls", ["endpoint", "call"], now["calls"])
            + _failures(now["failures"])
        )


def _backends(backends: list[dict[str, Any]]) -> str:
    rows = []
    for backend in backends:
        hosts = "<br>".join(
            f"{escape(h['host'])} <span class='b {escape(h['breaker'] or 'none')}' "
            f"data-breaker='{escape(backend['name'])} {escape(h['host'])}'>"
            f"{escape(h['breaker'] or 'no breaker')}</span>"
            for h in backend["hosts"]
        )
        usage = ", ".join(f"{escape(k)} {v:g}" for k, v in backend["usage"].items())
        rows.append(
            f"<tr><td>{escape(backend['name'])}</td><td>{escape(backend['kind'])}</td>"
            f"<td>{hosts}</td><td>{usage or '-'}</td></tr>"
        )
    return (
        "<h2>Backends</h2><table><tr><th>backend</th><th>kind</th><th>hosts / breaker</th>"
        f"<th>pool use</th></tr>{''.join(rows)}</table>"
    )


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _traffic(title: str, keys: list[str], rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{k}</th>" for k in keys)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{escape(str(row[k]))}</td>" for k in keys)
        + f"<td class='n'>{_number(row['rps'], 2)}</td><td class='n'>{_number(row['p50_ms'])}</td>"
        f"<td class='n'>{_number(row['p99_ms'])}</td>"
        f"<td class='n'>{_number(row['error_rate'] * 100)}%</td></tr>"
        for row in rows
    )
    return (
        f"<h2>{title}</h2><table><tr>{head}<th>req/s</th><th>p50 ms</th><th>p99 ms</th>"
        f"<th>errors</th></tr>{body or '<tr><td colspan=6>no traffic yet</td></tr>'}</table>"
    )


def _failures(failures: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td><code>{escape(f['request_id'])}</code></td><td>{escape(f['endpoint'])}</td>"
        f"<td class='n'>{f['status']}</td><td>{escape(', '.join(f['failed_calls']))}</td></tr>"
        for f in failures
    )
    return (
        "<h2>Recent failed requests</h2><table><tr><th>request id</th><th>endpoint</th>"
        f"<th>status</th><th>failed calls</th></tr>"
        f"{rows or '<tr><td colspan=4>none</td></tr>'}</table>"
    )


BOX_W, BOX_H, COL, ROW, PAD = 170, 34, 200, 44, 8


def _graph(route: RouteNode) -> str:
    """An SVG: the endpoint in column 0, each call in the column of its depth."""
    depths = route.depths()
    columns: dict[int, list[str]] = {}
    for call in route.calls:
        columns.setdefault(depths[call.name], []).append(call.name)
    where: dict[str, tuple[int, int]] = {}
    for depth, names in columns.items():
        for row, name in enumerate(names):
            where[name] = (PAD + depth * COL, PAD + row * ROW)
    rows = max([len(n) for n in columns.values()] + [1])
    width = PAD * 2 + (max(columns, default=1 if route.proxy else 0) + 1) * COL - (COL - BOX_W)
    height = PAD * 2 + rows * ROW - (ROW - BOX_H)
    parts = [_box(PAD, PAD, f"{route.method} {route.path}", "", "#e4ebf7")]
    for call in route.calls:
        x, y = where[call.name]
        sources = [where[n] for n in call.needs if n in where] or [(PAD, PAD)]
        for sx, sy in sources:
            parts.append(_edge(sx + BOX_W, sy + BOX_H // 2, x, y + BOX_H // 2))
        parts.append(_box(x, y, call.name, f"-> {call.backend}", "#fff"))
    if route.proxy is not None:
        parts.append(_edge(PAD + BOX_W, PAD + BOX_H // 2, PAD + COL, PAD + BOX_H // 2))
        parts.append(_box(PAD + COL, PAD, "proxy", f"-> {route.proxy}", "#fff"))
    return (
        f"<svg class='graph' width='{width}' height='{height}' role='img' "
        f"aria-label='{escape(route.path)}'>{''.join(parts)}</svg>"
    )


def _box(x: int, y: int, title: str, sub: str, fill: str) -> str:
    text = escape(title if len(title) <= 26 else title[:25] + "…")
    second = (
        f"<text x='{x + 6}' y='{y + 28}' font-size='10' fill='#556'>{escape(sub)}</text>"
        if sub
        else ""
    )
    return (
        f"<rect x='{x}' y='{y}' width='{BOX_W}' height='{BOX_H}' rx='5' fill='{fill}' "
        f"stroke='#99a'/><text x='{x + 6}' y='{y + 14}' font-size='12'>{text}</text>{second}"
    )


def _edge(x1: int, y1: int, x2: int, y2: int) -> str:
    return f"<line x1='{x1}' y1='{y1}' x2='{x2}' y2='{y2}' stroke='#778' stroke-width='1.2'/>"
