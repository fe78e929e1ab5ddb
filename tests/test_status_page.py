"""The status page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium) loads /status on the admin port while load runs, and
sees a backend's breaker turn "open" within the page's refresh interval, without a reload.

A screenshot is taken in every run (into the test's directory, or into
$FANOUT_SCREENSHOT_DIR when set: that is how docs/observability-status.png was made).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from gateway.web.status_page import REFRESH_SECONDS
from tests.processes import Running, start_gateway
from tests.recording_backend import RecordingBackend

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{good}", max_connections: 50}}
  reviews:
    kind: http
    url: "{bad}"
    breaker: {{failures: 3, cooldown: 60s}}
endpoints:
  - path: /api/products/{{id}}
    calls:
      - {{name: product, backend: catalog, path: "/products/{{id}}", required: true}}
      - {{name: author, backend: catalog, path: "/authors/{{calls.product.next}}", needs: [product], group: author}}
      - {{name: reviews, backend: reviews, path: /reviews, query: {{product: "{{id}}"}}, group: reviews}}
  - path: /api/catalog/{{rest:path}}
    proxy: {{backend: catalog, path: "/{{rest}}"}}
"""


@pytest.fixture
def backends() -> Iterator[tuple[RecordingBackend, RecordingBackend]]:
    good, bad = RecordingBackend(), RecordingBackend()
    yield good, bad
    good.close()
    bad.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), (
        "the browser test needs Debian's chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path / "chromium-profile"
    # offline machine: without these Chromium stalls on connections it cannot make
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1280,1100",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


class Load:
    """Requests in a loop on a thread, bounded in count and time, until stopped."""

    def __init__(self, url: str, limit: int = 20_000, seconds: float = 60.0) -> None:
        self.url, self.limit, self.seconds = url, limit, seconds
        self.stop = threading.Event()
        self.request_ids: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        ends = time.monotonic() + self.seconds
        with httpx.Client(base_url=self.url, timeout=10) as client:
            for i in range(self.limit):
                if self.stop.is_set() or time.monotonic() > ends:
                    return
                answer = client.get(f"/api/products/{i % 50}")
                if answer.headers.get("x-gateway-complete") == "false":
                    self.request_ids.append(answer.headers["x-request-id"])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def text_of(driver: webdriver.Chrome, selector: str) -> str:
    """The text of the element `selector` finds, read in one step in the page: the page
    replaces its live part on every refresh, so an element found first and read after
    can be gone by then (selenium's StaleElementReferenceException)."""
    text = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
        selector,
    )
    assert isinstance(text, str), f"nothing on the page matches {selector}"
    return text


def breaker_badge(driver: webdriver.Chrome, backend: RecordingBackend) -> str:
    return text_of(driver, f"[data-breaker='reviews {backend.url}']")


def shows_a_failed_request(driver: webdriver.Chrome, request_ids: list[str]) -> bool:
    listed = set(text_of(driver, "#live").split())
    return any(rid in listed for rid in list(request_ids))


def test_the_status_page_shows_an_open_breaker_within_its_refresh_interval(
    tmp_path: Path,
    backends: tuple[RecordingBackend, RecordingBackend],
    browser: webdriver.Chrome,
) -> None:
    good, bad = backends
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(good=good.url, bad=bad.url))
    with socket.socket() as held:  # the admin port, held until the gateway binds it too
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", 0))
        admin = f"http://127.0.0.1:{held.getsockname()[1]}"
        gateway: Running = start_gateway(
            config,
            env={"GATEWAY_ADMIN_PORT": str(held.getsockname()[1]), "GATEWAY_DRAIN_SECONDS": "0"},
        )
        try:
            assert httpx.get(f"{gateway.url}/api/products/1", timeout=30).status_code == 200
            load = Load(gateway.url)
            try:
                browser.get(f"{admin}/status")
                assert browser.title == "fanout status"
                assert breaker_badge(browser, bad) == "closed"
                browser.execute_script("window.notReloaded = true;")
                # the routes are drawn: the endpoint and its three calls, the proxy
                svg = browser.find_element(By.CSS_SELECTOR, "svg[aria-label='/api/products/{id}']")
                assert {"product", "author", "reviews"} <= set(svg.text.split())

                bad.failing = True
                opened = time.monotonic()
                WebDriverWait(browser, REFRESH_SECONDS + 1.5, poll_frequency=0.1).until(
                    lambda d: breaker_badge(d, bad) == "open"
                )
                assert time.monotonic() - opened <= REFRESH_SECONDS + 1.5
                assert browser.execute_script("return window.notReloaded === true;")
                # the live part also lists the failed requests and the traffic of the minute
                WebDriverWait(browser, REFRESH_SECONDS + 1.5, poll_frequency=0.1).until(
                    lambda d: shows_a_failed_request(d, load.request_ids)
                )
                assert "reviews" in text_of(browser, "#live")
                shots = Path(os.environ.get("FANOUT_SCREENSHOT_DIR", tmp_path))
                shot = shots / "observability-status.png"
                assert browser.save_screenshot(str(shot))
                assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            finally:
                load.close()
        finally:
            assert gateway.stop() == 0
