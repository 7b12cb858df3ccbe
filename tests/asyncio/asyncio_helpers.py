"""Helpers of the asyncio integration tests: echo servers, a raw asyncio client and server.

The handshake and frame builders they use are the shared ones of ``tests/helpers.py``.
Everything here talks to real sockets on 127.0.0.1. The raw client speaks just enough of RFC 6455
by hand (no shakehands code) to misbehave on purpose: half requests, unmasked frames, peers that
never read or never answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import shakehands

from ..helpers import (
    HOST,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    accept_for,
    close_code_and_reason,
    frame,
    make_key,
    mask_payload,
    parse_head,
    upgrade_request,
)

# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------


async def echo_handler(ws: shakehands.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


class EchoListener(shakehands.Listener):
    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        ws.send(message)


def echo_server(api: str, **options: Any) -> Any:
    """An echo server on 127.0.0.1 and a free port, for the coroutine or the callback API."""
    if api == "coroutine":
        return shakehands.serve(echo_handler, HOST, 0, **options)
    assert api == "callback"
    return shakehands.serve_callbacks(EchoListener(), HOST, 0, **options)


def uri(server: shakehands.Server[Any], path: str = "/", scheme: str = "ws") -> str:
    return f"{scheme}://{HOST}:{server.port}{path}"


async def wait_for_condition(predicate: Any, timeout: float = 5.0, interval: float = 0.01) -> None:
    """Poll ``predicate()`` until true; fail with TimeoutError after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Raw client
# ---------------------------------------------------------------------------------------------


class RawClient:
    """A hand-made WebSocket client over asyncio streams, for misbehaving on purpose."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, **kwargs: Any) -> RawClient:
        reader, writer = await asyncio.open_connection(HOST, port, **kwargs)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kwargs: Any) -> None:
        self.writer.write(frame(opcode, payload, **kwargs))

    async def read_head(self) -> tuple[int, dict[str, str]]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        return parse_head(head[:-4])

    async def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """Read an HTTP response and its Content-Length body."""
        status, headers = await self.read_head()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def handshake(self, port: int, path: str = "/", **kwargs: Any) -> dict[str, str]:
        key = make_key()
        self.send(upgrade_request(port, path, key=key, **kwargs))
        status, headers = await self.read_head()
        assert status == 101, (status, headers)
        assert headers["sec-websocket-accept"] == accept_for(key)
        return headers

    async def read_frame(self) -> tuple[bool, int, bytes]:
        """Read one frame from the server: ``(fin, opcode, payload)``; it must be unmasked."""
        b0, b1 = await self.reader.readexactly(2)
        assert not b1 & 0x80, "the server masked a frame"
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        payload = await self.reader.readexactly(length)
        return bool(b0 & 0x80), b0 & 0x0F, payload

    async def read_close(self, *, skip_pings: bool = True) -> tuple[int, str]:
        """Read frames until a close frame; return its code and reason."""
        while True:
            _, opcode, payload = await self.read_frame()
            if opcode == OP_CLOSE:
                return close_code_and_reason(payload)
            assert skip_pings and opcode in (OP_PING, OP_PONG), (opcode, payload[:50])

    async def read_eof(self) -> bytes:
        """Read until the server closes TCP; return what came before (a reset counts as EOF)."""
        chunks = []
        try:
            while chunk := await self.reader.read(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)

    def abort(self) -> None:
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def raw_exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes, bytes]:
    """Send ``data`` on a fresh raw connection; return the HTTP response and what follows it
    until the server closes the connection (which must happen)."""
    client = await RawClient.open(port)
    try:
        client.send(data)
        status, headers, body = await client.read_response()
        rest = await client.read_eof()
        return status, headers, body, rest
    finally:
        await client.close()


def small_buffer_socket(size: int = 4096) -> socket.socket:
    """A non-blocking TCP socket with small kernel buffers (set before connecting)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    sock.setblocking(False)
    return sock


async def sock_handshake(sock: socket.socket, port: int, path: str = "/") -> bytes:
    """Connect ``sock`` and complete the opening handshake; return bytes read past the 101."""
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (HOST, port))
    key = make_key()
    await loop.sock_sendall(sock, upgrade_request(port, path, key=key))
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await loop.sock_recv(sock, 4096)
        assert chunk, "connection closed during the handshake"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    assert status == 101
    assert headers["sec-websocket-accept"] == accept_for(key)
    return rest


# ---------------------------------------------------------------------------------------------
# Raw server
# ---------------------------------------------------------------------------------------------


class RawServerConnection:
    """The server end of one connection, as a raw stream: reads masked client frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.request_head = b""

    async def read_request(self) -> dict[str, str]:
        self.request_head = await self.reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in self.request_head.decode("latin-1").split("\r\n")[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return headers

    async def accept(self, extra: bytes = b"") -> dict[str, str]:
        headers = await self.read_request()
        self.writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_for(headers['sec-websocket-key'])}\r\n".encode()
            + extra
            + b"\r\n"
        )
        return headers

    def send_frame(self, opcode: int, payload: bytes = b"", **kwargs: Any) -> None:
        kwargs.setdefault("mask", False)
        self.writer.write(frame(opcode, payload, **kwargs))

    async def read_frame(self) -> tuple[bool, int, bytes]:
        """Read one client frame, which must be masked; return ``(fin, opcode, payload)``."""
        b0, b1 = await self.reader.readexactly(2)
        assert b1 & 0x80, "the client sent an unmasked frame"
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        mask = await self.reader.readexactly(4)
        payload = mask_payload(await self.reader.readexactly(length), mask)
        return bool(b0 & 0x80), b0 & 0x0F, payload

    async def read_eof(self) -> bytes:
        try:
            return await self.reader.read()
        except ConnectionResetError:
            return b""


class RawServer:
    """``asyncio.start_server`` on 127.0.0.1 running ``script(conn)`` for each connection."""

    def __init__(self, script: Callable[[RawServerConnection], Awaitable[None]]) -> None:
        self.script = script
        self.server: asyncio.Server | None = None
        self.done: asyncio.Future[None] | None = None
        self.errors: list[BaseException] = []

    async def __aenter__(self) -> RawServer:
        self.done = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await self.script(RawServerConnection(reader, writer))
            except BaseException as exc:  # surfaced by the test through .done
                self.errors.append(exc)
            finally:
                writer.close()
                assert self.done is not None
                if not self.done.done():
                    self.done.set_result(None)

        self.server = await asyncio.start_server(handle, HOST, 0)
        return self

    @property
    def uri(self) -> str:
        assert self.server is not None
        return f"ws://{HOST}:{self.server.sockets[0].getsockname()[1]}/"

    async def finished(self) -> None:
        assert self.done is not None
        await self.done
        if self.errors:
            raise self.errors[0]

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
