"""server/protocol.py's HeadWithBody: an answer's head written with its body, in one write."""

from __future__ import annotations

import asyncio

from gateway.server.protocol import HeadWithBody


class Transport:
    """What reached the socket, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.write(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def test_the_head_goes_out_with_the_body_then_writes_pass_through() -> None:
    socket = Transport()
    held = HeadWithBody(socket, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(b"HEAD\r\n\r\n")
    assert socket.writes == []
    held.write(b"body")
    assert socket.writes == [b"HEAD\r\n\r\nbody"]
    held.write(b"more")
    assert socket.writes == [b"HEAD\r\n\r\nbody", b"more"]
    await asyncio.sleep(0)  # the end of the turn: nothing was left held
    assert socket.writes == [b"HEAD\r\n\r\nbody", b"more"]


async def test_a_head_alone_goes_out_at_the_end_of_the_loops_turn() -> None:
    socket = Transport()
    held = HeadWithBody(socket, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(b"HEAD\r\n\r\n")  # a HEAD request's answer, or a body that comes later
    await asyncio.sleep(0)
    assert socket.writes == [b"HEAD\r\n\r\n"]
    held.write(b"later")
    assert socket.writes == [b"HEAD\r\n\r\n", b"later"]


async def test_closing_writes_what_is_held_first() -> None:
    socket = Transport()
    held = HeadWithBody(socket, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(b"HEAD\r\n\r\n")
    held.close()
    assert socket.writes == [b"HEAD\r\n\r\n"] and socket.closed
    assert held.is_closing()
    await asyncio.sleep(0)
    assert socket.writes == [b"HEAD\r\n\r\n"]


async def test_a_connection_closed_under_it_drops_what_is_held() -> None:
    socket = Transport()
    held = HeadWithBody(socket, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(b"HEAD\r\n\r\n")
    socket.close()  # the protocol closed the connection itself (a refusal)
    await asyncio.sleep(0)
    assert socket.writes == []
