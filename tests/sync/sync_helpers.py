"""Helpers of the blocking-API tests: a server in a thread and a raw-socket client.

Everything talks to real sockets on 127.0.0.1. The raw client writes RFC 6455 by hand (no
shakehands code) so that it can misbehave on purpose.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

from shakehands import sync

from ..helpers import (
    HOST,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    accept_for,
    close_code_and_reason,
    frame,
    make_key,
    parse_head,
    upgrade_request,
)


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
        status, headers = parse_head(head)
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
                return close_code_and_reason(payload)
            assert opcode in (OP_PING, OP_PONG), (opcode, payload[:50])

    def read_eof(self) -> None:
        """Read until the server closes TCP (a reset counts as the end too)."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
