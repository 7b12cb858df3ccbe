"""Test helpers for the sans-I/O core: an independent frame reader and HTTP builders/readers.

The readers here are deliberately written from RFC 6455 / RFC 9112 rather than with the engine's
code, so that what the engine writes is checked against a second implementation.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shakehands.protocol.connection import Connection
from shakehands.protocol.frames import serialize_frame

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@dataclass(frozen=True)
class WireFrame:
    """One frame as read back from bytes: payload already unmasked."""

    fin: bool
    rsv: int
    opcode: int
    masked: bool
    mask_key: bytes | None
    payload: bytes


def read_frames(data: bytes) -> list[WireFrame]:
    """Split ``data`` into frames; it must hold whole frames and nothing else."""
    frames = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        pos += 2
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack_from("!H", data, pos)
            pos += 2
        elif length == 127:
            (length,) = struct.unpack_from("!Q", data, pos)
            pos += 8
        key = None
        if b1 & 0x80:
            key = data[pos : pos + 4]
            pos += 4
        payload = data[pos : pos + length]
        assert len(payload) == length, "truncated frame"
        pos += length
        if key is not None:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        frames.append(
            WireFrame(
                fin=bool(b0 & 0x80),
                rsv=(b0 >> 4) & 0x7,
                opcode=b0 & 0x0F,
                masked=key is not None,
                mask_key=key,
                payload=payload,
            )
        )
    return frames


def close_code_of(frame: WireFrame) -> int | None:
    """The status code in a close frame, None for an empty one."""
    assert frame.opcode == 0x8
    if not frame.payload:
        return None
    return int.from_bytes(frame.payload[:2], "big")


def sent(conn: Connection) -> bytes:
    """Everything the connection queued since the last call, as one bytes object."""
    return b"".join(conn.data_to_send())


def sent_frames(conn: Connection) -> list[WireFrame]:
    return read_frames(sent(conn))


def masked(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A frame as a client would send it."""
    return serialize_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=True)


def unmasked(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A frame as a server would send it."""
    return serialize_frame(opcode, payload, fin=fin, rsv1=rsv1)


def feed_whole(conn: Connection, data: bytes) -> None:
    conn.receive_data(data)


def feed_bytewise(conn: Connection, data: bytes) -> None:
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])


def feed_chunks(conn: Connection, data: bytes, size: int = 3) -> None:
    for i in range(0, len(data), size):
        conn.receive_data(data[i : i + size])


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------

DEFAULT_HEADERS: tuple[tuple[str, str], ...] = (
    ("Host", "example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", RFC_KEY),
    ("Sec-WebSocket-Version", "13"),
)


def request_bytes(
    *,
    method: str = "GET",
    target: str = "/chat",
    version: str = "HTTP/1.1",
    headers: Sequence[tuple[str, str]] = DEFAULT_HEADERS,
    drop: Iterable[str] = (),
    replace: dict[str, str] | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """An upgrade request; ``drop`` removes headers, ``replace`` changes values, ``extra`` adds."""
    dropped = {name.lower() for name in drop}
    replace = {k.lower(): v for k, v in (replace or {}).items()}
    lines = [f"{method} {target} {version}"]
    for name, value in headers:
        if name.lower() in dropped:
            continue
        lines.append(f"{name}: {replace.get(name.lower(), value)}")
    lines.extend(f"{name}: {value}" for name, value in extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class HttpResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    rest: bytes

    def get_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        assert len(values) <= 1, f"several {name} headers"
        return values[0] if values else None


def read_response(data: bytes) -> HttpResponse:
    """Read one HTTP/1.1 response (head, then a Content-Length body) and what follows it."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, "response head is not complete"
    status_line, *field_lines = head.decode("latin-1").split("\r\n")
    version, status, reason = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = []
    for line in field_lines:
        name, colon, value = line.partition(":")
        assert colon and name and name == name.strip()
        headers.append((name, value.strip()))
    response = HttpResponse(int(status), reason, headers, b"", rest)
    length = response.get("Content-Length")
    if length is not None:
        n = int(length)
        response.body, response.rest = rest[:n], rest[n:]
    return response
