"""What the fuzzers check: one function per parser, shared by the atheris targets (fuzz_*.py)
and the hypothesis property tests (tests/hardening/test_parser_properties.py).

Each ``check_*`` feeds bytes, cut into chunks at the given positions, to one parser of
``shakehands.protocol`` and asserts what must hold for any input: nothing is raised but the
library's own errors, and those carry a 4xx status or a 1002/1007/1009 close code; the verdict
does not depend on how the bytes were cut; closes are well-formed. Any other exception, or a
failed assertion, is a finding.
"""

from __future__ import annotations

import base64
import hashlib
import zlib

from shakehands.protocol.connection import Close, Connection, Ping, Pong, Role, State
from shakehands.protocol.deflate import DeflateOptions, PerMessageDeflate
from shakehands.protocol.errors import InvalidHandshake, ProtocolError
from shakehands.protocol.handshake import GUID, Request, RequestParser, Response, ResponseParser
from shakehands.protocol.server import ServerProtocol

__all__ = [
    "split",
    "check_request_parser",
    "check_server_protocol",
    "check_response_parser",
    "check_client_protocol",
    "check_connection",
    "seeds",
]

FAILURE_CODES = {1002, 1007, 1009}


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut ``data`` at the given positions (modulo its length; duplicates ignored)."""
    if not data:
        return [data]
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def _request_verdict(chunks: list[bytes]) -> object:
    parser = RequestParser()
    try:
        for chunk in chunks:
            request = parser.feed(chunk)
            if request is not None:
                return ("request", request.method, request.target, request.headers, parser.rest)
    except InvalidHandshake as exc:
        assert 400 <= exc.status < 500, exc.status
        return ("refused", type(exc), exc.status)
    return ("incomplete",)


def check_request_parser(data: bytes, cuts: list[int]) -> None:
    """RequestParser: only InvalidHandshake (4xx); same verdict whole or chunked."""
    whole = _request_verdict([data])
    chunked = _request_verdict(split(data, cuts))
    if whole[0] == "request" and chunked[0] == "request":
        # What follows the head may be split differently: compare the head only.
        assert whole[:4] == chunked[:4]
    else:
        assert whole == chunked, (whole, chunked)


def check_server_protocol(data: bytes, cuts: list[int], compression: bool) -> None:
    """ServerProtocol answering as an I/O layer would; then frames, maybe deflated."""
    server = ServerProtocol(compression=DeflateOptions() if compression else None)
    for chunk in split(data, cuts):
        server.receive_data(chunk)
        for event in server.events_received():
            assert isinstance(event, (Request, str, bytes, Ping, Pong, Close)), event
            if isinstance(event, Request) and server.state is State.CONNECTING:
                server.send_response(server.accept())
        server.data_to_send()
    _check_after(server)
    if server.response is not None and server.response.status != 101:
        assert server.handshake_exc is not None
        assert 400 <= server.response.status < 500
        assert server.state is State.CLOSED
    server.receive_eof()
    assert server.state is State.CLOSED and server.close_expected()


def _response_verdict(chunks: list[bytes]) -> object:
    parser = ResponseParser()
    try:
        for chunk in chunks:
            response = parser.feed(chunk)
            if response is not None:
                return ("response", response.status, response.headers, response.body)
    except InvalidHandshake as exc:
        return ("refused", type(exc))
    return ("incomplete",)


def check_response_parser(data: bytes, cuts: list[int]) -> None:
    """ResponseParser: only InvalidHandshake; same verdict whole or chunked."""
    assert _response_verdict([data]) == _response_verdict(split(data, cuts))


def accept_response(key: str, extensions: str | None) -> bytes:
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    head = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n"
    )
    if extensions:
        head += f"Sec-WebSocket-Extensions: {extensions}\r\n"
    return (head + "\r\n").encode()


def check_client_protocol(data: bytes, cuts: list[int], accepted: bool, compression: bool) -> None:
    """ClientProtocol: the server's answer (a valid 101 first if ``accepted``), then frames."""
    from shakehands.protocol.client import ClientProtocol

    client = ClientProtocol(
        "ws://127.0.0.1/", compression=DeflateOptions() if compression else None
    )
    client.send_request()
    client.data_to_send()
    if accepted:
        data = accept_response(client.key, "permessage-deflate" if compression else None) + data
    for chunk in split(data, cuts):
        client.receive_data(chunk)
        for event in client.events_received():
            assert isinstance(event, (Response, str, bytes, Ping, Pong, Close)), event
        client.data_to_send()
    if client.handshake_exc is not None:
        assert isinstance(client.handshake_exc, InvalidHandshake)
        assert client.close_expected()
    _check_after(client)
    client.receive_eof()
    assert client.state is State.CLOSED and client.close_expected()


def check_connection(data: bytes, cuts: list[int], role: Role, deflate: int) -> None:
    """An open Connection fed arbitrary bytes; ``deflate`` 0: off, 1: with context takeover,
    2: without, 3: small windows."""
    conn = Connection(role, max_message_size=2**16, max_frame_size=2**15)
    if deflate:
        conn.use_deflate(
            PerMessageDeflate(
                local_no_context_takeover=deflate == 2,
                remote_no_context_takeover=deflate == 2,
                local_max_window_bits=9 if deflate == 3 else 15,
                remote_max_window_bits=9 if deflate == 3 else 15,
            )
        )
    received: list[object] = []
    for chunk in split(data, cuts):
        conn.receive_data(chunk)
        received.extend(conn.events_received())
        conn.data_to_send()
    for event in received:
        assert isinstance(event, (str, bytes, Ping, Pong, Close)), event
        if isinstance(event, (str, bytes)):
            assert len(event) <= 2**16 * (4 if isinstance(event, str) else 1)
    _check_after(conn)
    # Sending still works, or says why it cannot.
    if conn.state is State.OPEN:
        conn.send_text("still open")
        assert conn.data_to_send()
    conn.receive_eof()
    assert conn.state is State.CLOSED


def _check_after(conn: Connection) -> None:
    if conn.failure is not None:
        assert isinstance(conn.failure, ProtocolError)
        assert conn.failure.code in FAILURE_CODES, conn.failure.code
        assert conn.state is State.CLOSED
        assert conn.close_sent is None or conn.close_sent.code == conn.failure.code


def seeds() -> dict[str, bytes]:
    """Starting inputs for the fuzzers: valid requests, responses and frames."""
    from shakehands.protocol.frames import serialize_frame

    key = base64.b64encode(b"0123456789abcdef").decode()
    request = (
        "GET /chat?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Origin: https://a.test\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    ).encode()
    compressor = zlib.compressobj(wbits=-15)
    deflated = (compressor.compress(b"hello hello hello") + compressor.flush(zlib.Z_SYNC_FLUSH))[
        :-4
    ]
    masked = [
        serialize_frame(0x1, b"hello", mask=True, mask_key=b"abcd"),
        serialize_frame(0x2, b"\x00" * 300, mask=True, mask_key=b"wxyz"),
        serialize_frame(0x1, "ünï".encode(), fin=False, mask=True, mask_key=b"1234")
        + serialize_frame(0x0, "cødé".encode(), mask=True, mask_key=b"5678"),
        serialize_frame(0x9, b"ping", mask=True, mask_key=b"mask"),
        serialize_frame(0x8, b"\x03\xe8bye", mask=True, mask_key=b"kkkk"),
        serialize_frame(0x1, deflated, rsv1=True, mask=True, mask_key=b"dflt"),
    ]
    unmasked = [
        serialize_frame(0x1, b"hello"),
        serialize_frame(0x2, b"\x01" * 70000),
        serialize_frame(0x1, deflated, rsv1=True),
        serialize_frame(0xA, b"pong"),
    ]
    return {
        "request": request,
        "request_and_frames": request + b"".join(masked),
        "response_101": accept_response(key, "permessage-deflate"),
        "response_404": b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope\n",
        "client_frames": b"".join(masked),
        "server_frames": b"".join(unmasked),
    }


def decode(data: bytes) -> tuple[int, list[int], bytes]:
    """Split a fuzzer input into ``(flags, cuts, payload)``.

    Byte 0 holds the flags (which variant of the target), byte 1 the number of cuts (0-7), then
    two bytes per cut; the rest is what the parser is fed. Keeping the layout fixed lets a seed
    be written by hand (:func:`encode`) and lets the fuzzer mutate chunking and bytes alike.
    """
    if len(data) < 2:
        return 0, [], data
    flags, count = data[0], data[1] & 7
    cuts = [int.from_bytes(data[2 + 2 * i : 4 + 2 * i], "big") for i in range(count)]
    return flags, cuts, data[2 + 2 * count :]


def encode(flags: int, cuts: list[int], payload: bytes) -> bytes:
    """The inverse of :func:`decode`: a fuzzer input for a seed."""
    assert len(cuts) <= 7
    return bytes([flags, len(cuts)]) + b"".join(c.to_bytes(2, "big") for c in cuts) + payload
