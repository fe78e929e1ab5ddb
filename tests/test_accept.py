"""gateway/accept.py: pending connections are accepted in one batch, not one per iteration."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
import uvloop

from gateway.server.accept import BatchAccepter

PENDING = 50


class Counting(asyncio.Protocol):
    def __init__(self, made: list[asyncio.BaseTransport]) -> None:
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(PENDING * 2)
    sock.setblocking(False)
    yield sock
    sock.close()


def connect_clients(port: int, count: int) -> list[socket.socket]:
    # a blocking connect returns once the handshake is done: the connection is then in the
    # listener's accept queue, so `count` connections are pending when this returns
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


def test_one_readiness_accepts_every_pending_connection(listener: socket.socket) -> None:
    made: list[asyncio.BaseTransport] = []

    async def scenario() -> None:
        accepter = BatchAccepter(listener, lambda: Counting(made), batch=PENDING * 2)
        clients = connect_clients(listener.getsockname()[1], PENDING)
        try:
            accepter._on_readable()  # one readiness, as the loop would report it
            assert accepter.accepted == PENDING
            await asyncio.gather(*accepter._pending)
            assert len(made) == PENDING
            assert "accepted: 50" in repr(accepter)
        finally:
            accepter.close()
            for transport in made:
                transport.close()
            for client in clients:
                client.close()

    uvloop.run(scenario())


def test_batch_bounds_one_readiness_and_close_stops_accepting(listener: socket.socket) -> None:
    made: list[asyncio.BaseTransport] = []

    async def scenario() -> None:
        accepter = BatchAccepter(listener, lambda: Counting(made), batch=10)
        clients = connect_clients(listener.getsockname()[1], PENDING)
        try:
            accepter._on_readable()
            assert accepter.accepted == 10  # the rest waits for the next readiness
            accepter.close()
            assert "closed" in repr(accepter)
            accepter.close()  # idempotent
            await asyncio.gather(*accepter._pending)
            assert len(made) == 10
        finally:
            for transport in made:
                transport.close()
            for client in clients:
                client.close()

    uvloop.run(scenario())
