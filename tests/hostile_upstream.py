"""Hostile backends on 127.0.0.1 (tests and benchmarks/hostile.py only): raw asyncio servers
that answer as a broken or malicious upstream would.

Behaviours (switchable at any time, per connection):

* ``endless``: 200 JSON, chunked, whose body never ends (written as fast as it is read).
* ``bomb``: 200 with `Content-Encoding: gzip`: ~1 MB on the wire that inflates to
  `bomb_mib` MiB of JSON (a gzip bomb).
* ``switch``: an unsolicited `101 Switching Protocols`, then bytes that are not HTTP.
* ``drip``: a 200 head with a Content-Length of `drip_length` (1 MB), then one body byte
  every `drip_every` seconds.
* ``silent``: reads the request, never answers.
* ``echo``: 200 JSON with the request's headers (lower-cased names), its query (decoded)
  and its body's size (it reads a Content-Length or chunked body first).

Every behaviour counts request heads (`requests`) and every byte received (`received`), so a
test can say what reached the upstream. Like tests/faultproxy.py it runs on the caller's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import zlib
from collections.abc import AsyncIterator
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

import orjson

Behaviour = Literal["endless", "bomb", "switch", "drip", "silent", "echo"]
HEAD_END = b"\r\n\r\n"
JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


@functools.cache
def gzip_bomb(mib: int) -> bytes:
    """A gzip body of ~1 KB per MiB that inflates to `{"a": "000...0"}` of `mib` MiB.

    Built in a fraction of a second instead of compressing `mib` MiB: after a sync flush the
    deflate blocks encoding 1 MiB of '0' refer only to the '0's before them, so the same
    bytes are valid again and again; the gzip trailer gets the CRC and size of the whole.
    """
    start, chunk, end = b'{"a": "', b"0" * (1 << 20), b'"}'
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = compressor.compress(start + chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
    middle = compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
    tail = compressor.compress(end) + compressor.flush()
    crc = zlib.crc32(start)
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(end, crc)
    size = (len(start) + mib * len(chunk) + len(end)) & 0xFFFFFFFF
    trailer = crc.to_bytes(4, "little") + size.to_bytes(4, "little")
    return head + middle * (mib - 1) + tail[:-8] + trailer


class HostileUpstream:
    """Listen on an ephemeral port of 127.0.0.1 and misbehave as `behaviour` says."""

    def __init__(self, behaviour: Behaviour, bomb_mib: int = 1024) -> None:
        self.behaviour: Behaviour = behaviour
        self.bomb_mib = bomb_mib
        self.drip_every = 0.2
        self.drip_length = 1_000_000  # the Content-Length a drip announces
        self.requests = 0
        self.received = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __repr__(self) -> str:
        return f"<HostileUpstream :{self.port} [{self.behaviour}, {self.requests} requests]>"

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._writers)

    async def start(self) -> HostileUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0)  # let the aborted transports run their connection_lost

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await self._read_head(reader)
                if head is None:
                    return
                self.requests += 1
                if not await self._answer(head, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await reader.readuntil(HEAD_END)
        except asyncio.IncompleteReadError:
            return None
        self.received += len(head)
        return head

    async def _answer(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection is done with."""
        behaviour = self.behaviour
        if behaviour == "silent":
            while data := await reader.read(65536):
                self.received += len(data)
            return False
        if behaviour == "endless":
            writer.write(JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n[0, 0\r\n")
            piece = b", 0" * 20_000
            frame = b"%x\r\n" % len(piece) + piece + b"\r\n"
            while True:
                writer.write(frame)
                await writer.drain()
        if behaviour == "bomb":
            body = gzip_bomb(self.bomb_mib)
            writer.write(
                JSON_HEAD
                + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
                + body
            )
            await writer.drain()
            return True
        if behaviour == "switch":
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: Upgrade\r\n\r\n"
            )
            while True:
                writer.write(b"\x00\xffnot http\r\n" * 100)
                await writer.drain()
                await asyncio.sleep(0.05)
        if behaviour == "drip":
            writer.write(JSON_HEAD + b"Content-Length: %d\r\n\r\n" % self.drip_length)
            while True:
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(self.drip_every)
        # echo
        request_line, *lines = head.split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            if name:
                headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
        body_bytes = await self._read_body(headers, reader)
        if body_bytes is None:
            return False  # the body was broken off
        target = request_line.split(b" ")[1].decode("latin-1")
        answer = orjson.dumps(
            {
                "headers": headers,
                "body_bytes": body_bytes,
                "query": dict(parse_qsl(urlsplit(target).query, keep_blank_values=True)),
            }
        )
        writer.write(JSON_HEAD + b"Content-Length: %d\r\n\r\n" % len(answer) + answer)
        await writer.drain()
        return True

    async def _read_body(self, headers: dict[str, str], reader: asyncio.StreamReader) -> int | None:
        """Read the request body (a length, or chunked to its last chunk); None if cut off."""
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
            self.received += len(body)
            return len(body)
        if headers.get("transfer-encoding", "").lower() != "chunked":
            return 0
        seen, count = b"", 0  # the framed size: enough to tell what reached the upstream
        while not seen.endswith(b"0\r\n\r\n"):
            data = await reader.read(65536)
            if not data:
                return None
            self.received += len(data)
            count += len(data)
            seen = (seen + data)[-5:]
        return count


@contextlib.asynccontextmanager
async def hostile_upstream(
    behaviour: Behaviour, bomb_mib: int = 1024
) -> AsyncIterator[HostileUpstream]:
    """A started hostile upstream, closed (every socket aborted) on exit."""
    upstream = await HostileUpstream(behaviour, bomb_mib).start()
    try:
        yield upstream
    finally:
        await upstream.close()
