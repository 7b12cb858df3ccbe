"""Shared helpers of the blocking-API tests: a server in a thread and a raw-socket client.

Everything talks to real sockets on 127.0.0.1. The raw client writes RFC 6455 by hand (no
shakehands code) so that it can misbehave on purpose.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

from shakehands import sync

HOST = "127.0.0.1"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def echo(ws: sync.ServerConnection) -> None:
    for message in ws:
        ws.send(message)


@contextlib.contextmanager
def running(handler: Any = echo, **options: Any) -> Iterator[sync.Server]:
    """A blocking server on a free port, serving in a thread for the duration of the block."""
    server = sync.serve(handler, HOST, 0, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(10)


def uri(server: sync.Server, path: str = "/", scheme: str = "ws") -> str:
    return f"{scheme}://{HOST}:{server.port}{path}"


def make_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def upgrade_request(
    port: int,
    path: str = "/",
    *,
    key: str | None = None,
    version: str = "13",
    extra: list[tuple[str, str]] | None = None,
    upgrade: bool = True,
) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    if upgrade:
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key or make_key()}",
            f"Sec-WebSocket-Version: {version}",
        ]
    lines += [f"{name}: {value}" for name, value in extra or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True) -> bytes:
    """A frame as a client sends it (masked by default)."""
    b0 = opcode | (0x80 if fin else 0)
    mbit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        header = bytes((b0, mbit | n))
    elif n < 65536:
        header = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        header = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return header + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


class RawClient:
    """A hand-made WebSocket client on a blocking socket."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port = port
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kwargs: Any) -> None:
        self.sock.sendall(frame(opcode, payload, **kwargs))

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"connection closed with {len(self.buffer)} of {n} bytes")
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """Read an HTTP response head and its Content-Length body."""
        while b"\r\n\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed before the response")
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = self._read(int(headers.get("content-length", "0")))
        return status, headers, body

    def handshake(self, path: str = "/", **kwargs: Any) -> dict[str, str]:
        key = make_key()
        self.send(upgrade_request(self.port, path, key=key, **kwargs))
        status, headers, _ = self.read_response()
        assert status == 101, (status, headers)
        assert headers["sec-websocket-accept"] == accept_for(key)
        return headers

    def read_frame(self) -> tuple[bool, int, bytes]:
        """One frame from the server: ``(fin, opcode, payload)``; it must be unmasked."""
        b0, b1 = self._read(2)
        assert not b1 & 0x80, "the server masked a frame"
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        return bool(b0 & 0x80), b0 & 0x0F, self._read(length)

    def read_close(self) -> tuple[int, str]:
        """Read frames until a close frame (skipping pings); return its code and reason."""
        while True:
            _, opcode, payload = self.read_frame()
            if opcode == OP_CLOSE:
                if not payload:
                    return 1005, ""
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()
            assert opcode in (OP_PING, OP_PONG), (opcode, payload[:50])

    def read_eof(self) -> None:
        """Read until the server closes TCP (a reset counts as the end too)."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
