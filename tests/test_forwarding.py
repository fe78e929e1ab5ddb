"""Forwarding headers: believed only from trusted proxies, one rule for every route.

Tables for the rule itself, then a real gateway passing a request through to the catalog's
/headers echo, with and without a trusted proxy in front of it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.web.forwarding import Forwarding, parse_trusted
from tests.processes import Running, start_gateway

PROXIES = Forwarding(parse_trusted(["10.0.0.0/8", "2001:db8::/32"]))


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        ("203.0.113.9", "", "203.0.113.9"),  # direct client
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # a direct client's own XFF is not believed
        ("10.0.0.5", "198.51.100.7", "198.51.100.7"),  # one trusted proxy
        ("10.0.0.5", "6.6.6.6, 198.51.100.7, 10.0.0.9", "198.51.100.7"),  # right-most untrusted
        ("10.0.0.5", "10.1.1.1, 10.2.2.2", "10.0.0.5"),  # only proxies: the peer
        ("10.0.0.5", "not-an-ip", "10.0.0.5"),
        ("2001:db8::1", "2001:db9::7", "2001:db9::7"),
        (None, "1.2.3.4", None),
    ],
)
def test_client_ip(peer: str | None, xff: str, client: str | None) -> None:
    assert PROXIES.client_ip(peer, {"x-forwarded-for": xff} if xff else {}) == client


def test_upstream_headers_from_a_direct_client_ignore_its_claims() -> None:
    headers = {"x-forwarded-for": "1.2.3.4", "x-forwarded-proto": "https", "host": "gw:8080"}
    assert PROXIES.upstream_headers("203.0.113.9", "http", headers) == [
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "gw:8080"),
    ]


def test_upstream_headers_from_a_trusted_proxy_append_the_peer() -> None:
    headers = {
        "x-forwarded-for": "198.51.100.7",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "shop.example",
        "host": "gw:8080",
    }
    assert PROXIES.upstream_headers("10.0.0.5", "http", headers) == [
        ("X-Forwarded-For", "198.51.100.7, 10.0.0.5"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "shop.example"),
    ]


def test_bad_cidrs_are_named() -> None:
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33' is not an IP address")):
        parse_trusted(["10.0.0.0/33"])


CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}"}}
endpoints:
  - path: /api/catalog/{{rest:path}}
    proxy: {{backend: catalog, path: "/{{rest}}"}}
"""

CLAIMS = {
    "X-Forwarded-For": "6.6.6.6",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "Forwarded": "for=6.6.6.6",
    "X-Real-IP": "6.6.6.6",
}


@pytest.fixture(scope="module")
def config(catalog: Running, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fwd") / "gateway.yaml"
    path.write_text(CONFIG.format(catalog=catalog.url))
    return path


def seen_upstream(gateway: Running) -> dict[str, str]:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        response = http.get("/api/catalog/headers", headers=CLAIMS)
    assert response.status_code == 200, response.text
    seen: dict[str, str] = response.json()
    return seen


@pytest.fixture
def gateways(config: Path) -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    assert [g.stop() for g in started] == [0] * len(started)


def test_a_direct_clients_forwarding_claims_never_reach_the_upstream(
    config: Path, gateways: list[Running]
) -> None:
    gateways.append(start_gateway(config))
    seen = seen_upstream(gateways[0])
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"].startswith("127.0.0.1:")
    assert "forwarded" not in seen and "x-real-ip" not in seen


def test_a_trusted_proxys_chain_is_appended_to(config: Path, gateways: list[Running]) -> None:
    gateways.append(start_gateway(config, env={"GATEWAY_TRUSTED_PROXIES": "127.0.0.0/8, ::1"}))
    seen = seen_upstream(gateways[0])
    assert seen["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == "evil.example"
    assert "forwarded" not in seen and "x-real-ip" not in seen
