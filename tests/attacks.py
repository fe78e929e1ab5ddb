"""Raw-socket clients that attack the gateway's HTTP server (tests and benchmarks/hostile.py).

Each sends bytes exactly as written (no client library normalises or refuses them), reads
whatever comes back until the gateway closes the connection, and says what happened: the
status (None when the connection was closed without an answer) and how long it took. Every
attack is bounded: in bytes (it stops sending once answered or after `most` bytes) and in
time (`seconds`). 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """What the gateway did with one attacking connection."""

    status: int | None  # None: closed (or still open at `seconds`) without an answer
    elapsed: float
    answer: bytes  # every byte it sent back
    closed: bool  # the gateway closed the connection (EOF or reset)


def head(target: str = "/", method: str = "GET", *, host: bool = True, extra: str = "") -> bytes:
    """A request head (with `Connection: close`), `extra` being more header lines."""
    lines = f"{method} {target} HTTP/1.1\r\n" + ("Host: gw\r\n" if host else "") + extra
    return (lines + "Connection: close\r\n\r\n").encode("latin-1")


async def attack(
    port: int, pieces: Iterable[bytes] | AsyncIterator[bytes], seconds: float = 30.0
) -> Outcome:
    """Send `pieces` on one connection (stopping when the gateway answers or closes) while
    reading the answer; the outcome once the gateway closed, or at `seconds`."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = bytearray()
    closed = False

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            if isinstance(pieces, AsyncIterator):
                async for piece in pieces:
                    if answer or closed:
                        return
                    writer.write(piece)
                    await writer.drain()
            else:
                for piece in pieces:
                    if answer or closed:
                        return
                    writer.write(piece)
                    await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        async with asyncio.timeout(seconds):
            while data := await reader.read(65536):
                answer += data
            closed = True
    except TimeoutError:
        pass
    except ConnectionError:
        closed = True
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.transport.abort()
    return Outcome(_status(bytes(answer)), time.monotonic() - started, bytes(answer), closed)


def _status(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer.split(b" ", 2)[1])


async def dripping(data: bytes, every: float) -> AsyncIterator[bytes]:
    """`data` one byte at a time, `every` seconds apart (a slowloris)."""
    for index in range(len(data)):
        yield data[index : index + 1]
        await asyncio.sleep(every)  # the attack's pace, not a synchronisation


# --- the attacks -------------------------------------------------------------------------


def header_flood(target: str, headers: int) -> list[bytes]:
    """One request with `headers` header lines (20,000 are ~250 KB), sent in 64 KiB writes."""
    lines = "".join(f"x-h{i}: v\r\n" for i in range(headers))
    data = head(target, extra=lines)
    return [data[i : i + 65536] for i in range(0, len(data), 65536)]


def huge_line(target: str, most: int) -> Iterable[bytes]:
    """A header line that keeps growing, up to `most` bytes (stops when answered)."""
    yield f"GET {target} HTTP/1.1\r\nHost: gw\r\nX-Big: ".encode()
    for _ in range(most // 65536):
        yield b"a" * 65536


def many_headers(target: str, count: int, size: int) -> bytes:
    """A request within the limits: `count` header lines of `size` bytes each."""
    value = "v" * (size - 12)
    return head(target, extra="".join(f"x-h{i:05}: {value}\r\n" for i in range(count)))


def slow_head(target: str, every: float) -> AsyncIterator[bytes]:
    """A head sent one byte per `every` seconds."""
    return dripping(head(target, extra="X-Slow: " + "s" * 200 + "\r\n"), every)


async def silence() -> AsyncIterator[bytes]:
    """Nothing, ever (a connection that never sends a byte)."""
    return
    yield b""  # pragma: no cover - makes this an async generator


async def slow_body(target: str, size: int, every: float) -> AsyncIterator[bytes]:
    """A POST whose head is sent at once and whose `size`-byte body drips."""
    yield head(target, "POST", extra=f"Content-Length: {size}\r\nContent-Type: text/plain\r\n")
    async for piece in dripping(b"x" * size, every):
        yield piece


def chunked(target: str, chunks: Iterable[bytes], method: str = "POST") -> list[bytes]:
    """A chunked body, each chunk framed as it is given (so a test can break the framing)."""
    return [
        head(target, method, extra="Transfer-Encoding: chunked\r\n"),
        *chunks,
    ]


def chunk(data: bytes) -> bytes:
    """One well-framed chunk."""
    return b"%x\r\n" % len(data) + data + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"
