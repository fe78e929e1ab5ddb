"""The capacity runner's /metrics sampling (loadtests/sampler.py), against a real HTTP server
that answers as one gateway process, or as `--workers 2` does: each scrape reaches one worker,
whose answer has the group's summed counters and its own gauges with a `pid` label."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loadtests.sampler import Sampler, scrape, summed
from tests.threaded_http import JsonHandler, ThreadedHttp

SINGLE = """\
gateway_requests_in_flight 7.0
gateway_requests_in_flight_peak 9.0
gateway_open_connections 8.0
gateway_open_connections_peak 10.0
gateway_shed_requests_total 3.0
"""


def worker(pid: str, in_flight: int, peak: int) -> str:
    return (
        f'gateway_requests_in_flight{{pid="{pid}"}} {in_flight}.0\n'
        f'gateway_requests_in_flight_peak{{pid="{pid}"}} {peak}.0\n'
        f'gateway_open_connections{{pid="{pid}"}} {in_flight + 1}.0\n'
        f'gateway_open_connections_peak{{pid="{pid}"}} {peak + 1}.0\n'
        "gateway_shed_requests_total 5.0\n"
    )


class Answers:
    """The /metrics answers, in turn."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.served = 0

    def next(self) -> str:
        text = self.texts[self.served % len(self.texts)]
        self.served += 1
        return text


@pytest.fixture
def metrics() -> Iterator[tuple[str, Answers]]:
    answers = Answers()

    class Handler(JsonHandler):
        def do_GET(self) -> None:
            body = answers.next().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    http = ThreadedHttp(Handler)
    try:
        yield http.url, answers
    finally:
        http.close()


def test_one_process_is_read_as_it_answers(metrics: tuple[str, Answers]) -> None:
    url, answers = metrics
    answers.texts = [SINGLE]
    assert scrape(url) == {
        "in_flight": 7.0,
        "in_flight_peak": 9.0,
        "open_connections": 8.0,
        "open_connections_peak": 10.0,
        "shed_total": 3.0,
    }
    sample = Sampler(url, None, set()).sample()
    assert (sample.in_flight, sample.in_flight_peak) == (7.0, 9.0)  # the gateway's own peak


def test_workers_gauges_are_summed_over_the_latest_heard_from_each(
    metrics: tuple[str, Answers],
) -> None:
    url, answers = metrics
    answers.texts = [worker("11", 100, 150), worker("22", 40, 300)]
    sampler = Sampler(url, None, set())
    first = sampler.sample()  # only worker 11 heard yet
    assert (first.in_flight, first.in_flight_peak) == (100.0, 150.0)
    second = sampler.sample()  # both heard: 100 + 40
    assert second.in_flight == 140.0
    assert second.open_connections == 142.0
    # the workers' peaks came at moments of their own: the group's peak is the sampled sum
    assert second.in_flight_peak == 140.0
    assert second.open_connections_peak == 142.0
    assert second.shed_total == 5.0  # a counter of the whole group, not summed again


def test_summed_adds_each_gauge_over_the_processes() -> None:
    assert summed({"1": {"in_flight": 2.0}, "2": {"in_flight": 3.0, "shed_total": 1.0}}) == {
        "in_flight": 5.0,
        "shed_total": 1.0,
    }
