"""ClientProtocol: building the request, checking the response, then frames; parse_uri."""

from __future__ import annotations

import pytest

from shakehands.protocol.client import ClientProtocol, WebSocketURI, parse_uri
from shakehands.protocol.connection import Close, Ping, Pong, State
from shakehands.protocol.errors import (
    HeadersTooLarge,
    InvalidResponse,
    InvalidState,
    InvalidStatus,
    InvalidURI,
)
from shakehands.protocol.frames import Opcode, serialize_close
from shakehands.protocol.handshake import (
    MAX_HEADER_BYTES,
    Headers,
    Request,
    RequestParser,
    Response,
    accept_key,
    build_accept_response,
    check_request,
)
from shakehands.protocol.server import ServerProtocol

from .helpers import feed_bytewise, feed_chunks, read_frames, sent, unmasked


def response_for(client: ClientProtocol, **kwargs: object) -> bytes:
    return build_accept_response(client.key, **kwargs).serialize()  # type: ignore[arg-type]


def open_client(uri: str = "ws://example.com/chat", **kwargs: object) -> ClientProtocol:
    client = ClientProtocol(uri, **kwargs)  # type: ignore[arg-type]
    client.send_request()
    client.data_to_send()
    client.receive_data(response_for(client))
    (response,) = client.events_received()
    assert isinstance(response, Response)
    return client


def assert_handshake_failed(client: ClientProtocol, exc_type: type = InvalidResponse) -> None:
    assert isinstance(client.handshake_exc, exc_type), client.handshake_exc
    assert client.state is State.CLOSED
    assert client.close_expected()
    assert client.events_received() == []
    with pytest.raises(InvalidState):
        client.send_text("no")
    # Nothing more is read.
    client.receive_data(unmasked(Opcode.TEXT, b"late"))
    assert client.events_received() == []


# ---------------------------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------------------------


def test_request_is_valid_for_server() -> None:
    client = ClientProtocol(
        "ws://example.com:8080/chat?room=1",
        origin="https://app.example",
        subprotocols=["chat", "superchat"],
        extra_headers={"User-Agent": "shakehands-test"},
    )
    assert client.state is State.CONNECTING
    assert not client.close_expected()
    client.send_request()
    data = sent(client)
    assert data.startswith(b"GET /chat?room=1 HTTP/1.1\r\n")
    assert data.endswith(b"\r\n\r\n")

    request = RequestParser().feed(data)
    assert request is not None
    assert check_request(request) == client.key
    assert request.host == "example.com:8080"
    assert request.origin == "https://app.example"
    assert request.subprotocols == ["chat", "superchat"]
    assert request.headers["User-Agent"] == "shakehands-test"
    assert request == client.request

    server = ServerProtocol(origins=["https://app.example"], subprotocols=["superchat"])
    server.receive_data(data)
    (event,) = server.events_received()
    assert isinstance(event, Request)
    server.send_response(server.accept())
    assert server.state is State.OPEN
    client.receive_data(sent(server))
    (response,) = client.events_received()
    assert isinstance(response, Response) and response.status == 101
    assert client.response is response
    assert client.state is State.OPEN
    assert client.handshake_exc is None
    assert client.subprotocol == "superchat"
    assert not client.close_expected()


def test_full_conversation_with_server() -> None:
    client = ClientProtocol("ws://localhost/")
    server = ServerProtocol()
    client.send_request()
    server.receive_data(sent(client))
    server.send_response(server.accept())
    client.receive_data(sent(server))
    assert client.state is State.OPEN and server.state is State.OPEN
    client.events_received()
    server.events_received()

    client.send_text("hi")
    client.send_ping(b"1")
    server.receive_data(sent(client))
    assert server.events_received() == ["hi", Ping(b"1")]
    server.send_binary(b"\x00" * 1000)
    client.receive_data(sent(server))
    assert client.events_received() == [Pong(b"1"), b"\x00" * 1000]

    client.send_close(1000, "bye")
    server.receive_data(sent(client))
    assert server.events_received() == [Close(1000, "bye")]
    assert not server.close_expected()  # the echo is owed until the output is taken
    client.receive_data(sent(server))
    assert client.events_received() == [Close(1000, "")]
    assert client.state is State.CLOSED
    assert not client.close_expected()
    client.receive_eof()
    assert client.close_expected()


def test_each_client_has_a_fresh_key() -> None:
    keys = {ClientProtocol("ws://x/").key for _ in range(8)}
    assert len(keys) == 8


def test_cannot_send_before_open() -> None:
    client = ClientProtocol("ws://example.com/")
    with pytest.raises(InvalidState):
        client.send_text("too early")
    with pytest.raises(InvalidState):
        client.send_close()


@pytest.mark.parametrize(
    ("uri", "host"),
    [
        ("ws://[::1]:8080/", "[::1]:8080"),
        ("ws://[2001:db8::1]/", "[2001:db8::1]"),
        ("wss://[::1]:443/", "[::1]"),
    ],
)
def test_ipv6_host(uri: str, host: str) -> None:
    client = ClientProtocol(uri)
    assert client.request.headers["Host"] == host
    client.send_request()
    server = ServerProtocol()
    server.receive_data(sent(client))
    server.send_response(server.accept())
    assert server.state is State.OPEN


# ---------------------------------------------------------------------------------------------
# The response
# ---------------------------------------------------------------------------------------------


def test_wrong_accept_key() -> None:
    client = ClientProtocol("ws://example.com/")
    client.send_request()
    wrong = Response(
        101,
        Headers(
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", accept_key("AAAAAAAAAAAAAAAAAAAAAA==")),
            ]
        ),
    )
    client.receive_data(wrong.serialize())
    assert_handshake_failed(client, InvalidResponse)
    assert client.response is not None and client.response.status == 101


@pytest.mark.parametrize("drop", ["Upgrade", "Connection", "Sec-WebSocket-Accept"])
def test_missing_response_header(drop: str) -> None:
    client = ClientProtocol("ws://example.com/")
    response = build_accept_response(client.key)
    headers = Headers((n, v) for n, v in response.headers.items() if n != drop)
    client.receive_data(Response(101, headers).serialize())
    assert_handshake_failed(client, InvalidResponse)


def test_status_403_with_body() -> None:
    client = ClientProtocol("ws://example.com/")
    client.send_request()
    client.receive_data(
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n"
        b"go away!\r\n"
    )
    assert_handshake_failed(client, InvalidStatus)
    exc = client.handshake_exc
    assert isinstance(exc, InvalidStatus)
    assert isinstance(exc.response, Response)
    assert exc.response.status == 403
    assert exc.response.body == b"go away!\r\n"
    assert exc.response.headers["Content-Type"] == "text/plain"


def test_status_403_body_split_and_waited_for() -> None:
    client = ClientProtocol("ws://example.com/")
    client.receive_data(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nno")
    assert client.handshake_exc is None
    assert client.state is State.CONNECTING
    client.receive_data(b"pe!")
    assert isinstance(client.handshake_exc, InvalidStatus)
    assert client.handshake_exc.response.body == b"nope!"  # type: ignore[attr-defined]


def test_status_with_body_cut_by_eof() -> None:
    client = ClientProtocol("ws://example.com/")
    client.receive_data(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 50\r\n\r\nbusy")
    assert client.handshake_exc is None
    client.receive_eof()
    assert isinstance(client.handshake_exc, InvalidStatus)
    assert client.handshake_exc.response.status == 503  # type: ignore[attr-defined]
    assert client.handshake_exc.response.body == b"busy"  # type: ignore[attr-defined]
    assert client.close_expected()


def test_status_from_server_refusal() -> None:
    client = ClientProtocol("ws://example.com/")
    client.send_request()
    server = ServerProtocol(origins=["https://only.example"])
    server.receive_data(sent(client))
    server.send_response(server.accept())
    client.receive_data(sent(server))
    exc = client.handshake_exc
    assert isinstance(exc, InvalidStatus)
    assert exc.response.status == 403  # type: ignore[attr-defined]
    assert exc.response.body.endswith(b"\n")  # type: ignore[attr-defined]


@pytest.mark.parametrize("chunk", [1, 2, 7, 50])
def test_response_split_in_chunks(chunk: int) -> None:
    client = ClientProtocol("ws://example.com/")
    feed_chunks(client, response_for(client, extra_headers={"X-A": "b"}), chunk)
    (response,) = client.events_received()
    assert isinstance(response, Response)
    assert response.headers["X-A"] == "b"
    assert client.state is State.OPEN


def test_response_split_then_frames() -> None:
    client = ClientProtocol("ws://example.com/")
    data = response_for(client) + unmasked(Opcode.TEXT, b"hello") + unmasked(Opcode.PING, b"x")
    feed_bytewise(client, data)
    events = client.events_received()
    assert isinstance(events[0], Response)
    assert events[1:] == ["hello", Ping(b"x")]
    (pong,) = read_frames(sent(client))
    assert pong.opcode == Opcode.PONG and pong.masked and pong.payload == b"x"


def test_frames_in_same_packet_as_101() -> None:
    client = ClientProtocol("ws://example.com/")
    data = (
        response_for(client)
        + unmasked(Opcode.TEXT, b"first")
        + unmasked(Opcode.BINARY, b"second", fin=False)
    )
    client.receive_data(data)
    events = client.events_received()
    assert isinstance(events[0], Response)
    assert events[1:] == ["first"]
    client.receive_data(unmasked(Opcode.CONT, b"!"))
    assert client.events_received() == [b"second!"]


def test_close_in_same_packet_as_101() -> None:
    client = ClientProtocol("ws://example.com/")
    client.receive_data(
        response_for(client) + unmasked(Opcode.CLOSE, serialize_close(1001, "restart"))
    )
    events = client.events_received()
    assert events[1:] == [Close(1001, "restart")]
    (echo,) = read_frames(sent(client))
    assert client.state is State.CLOSED
    assert echo.opcode == Opcode.CLOSE and echo.masked


def test_invalid_frame_in_same_packet_as_101() -> None:
    client = ClientProtocol("ws://example.com/")
    client.receive_data(response_for(client) + unmasked(Opcode.TEXT, b"\xff"))
    assert client.handshake_exc is None
    assert client.failure is not None and client.failure.code == 1007
    client.data_to_send()
    assert client.close_expected()


def test_subprotocol_selected() -> None:
    client = ClientProtocol("ws://example.com/", subprotocols=["a", "b"])
    client.receive_data(response_for(client, subprotocol="b"))
    assert client.state is State.OPEN
    assert client.subprotocol == "b"


def test_no_subprotocol_selected() -> None:
    client = ClientProtocol("ws://example.com/", subprotocols=["a", "b"])
    client.receive_data(response_for(client))
    assert client.state is State.OPEN
    assert client.subprotocol is None


@pytest.mark.parametrize(
    ("offered", "selected"), [(["a", "b"], "c"), ([], "a"), (["a", "b"], "a, b"), (["a"], "A")]
)
def test_subprotocol_not_offered(offered: list[str], selected: str) -> None:
    client = ClientProtocol("ws://example.com/", subprotocols=offered)
    client.receive_data(response_for(client, subprotocol=selected))
    assert_handshake_failed(client, InvalidResponse)
    assert client.subprotocol is None


def test_eof_during_handshake() -> None:
    client = ClientProtocol("ws://example.com/")
    client.send_request()
    client.receive_data(b"HTTP/1.1 101 Switching")
    client.receive_eof()
    assert isinstance(client.handshake_exc, InvalidResponse)
    assert client.state is State.CLOSED
    assert client.close_expected()
    assert client.events_received() == []


def test_eof_before_any_response() -> None:
    client = ClientProtocol("ws://example.com/")
    client.receive_eof()
    assert isinstance(client.handshake_exc, InvalidResponse)
    assert client.close_expected()


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.0 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 10 Short\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 101 OK\r\nbad header\r\n\r\n",
    ],
)
def test_invalid_response(data: bytes) -> None:
    client = ClientProtocol("ws://example.com/")
    client.receive_data(data)
    assert_handshake_failed(client, InvalidResponse)


def test_response_headers_too_large() -> None:
    client = ClientProtocol("ws://example.com/")
    client.receive_data(b"HTTP/1.1 101 OK\r\nX: " + b"a" * (MAX_HEADER_BYTES + 10))
    # The server's fault: an invalid response, not the 431 a server answers a request with.
    assert isinstance(client.handshake_exc, InvalidResponse)
    assert not isinstance(client.handshake_exc, HeadersTooLarge)
    assert str(client.handshake_exc) == "response headers too large"
    assert client.close_expected()


def test_client_message_limits() -> None:
    client = open_client(max_message_size=3)
    client.receive_data(unmasked(Opcode.BINARY, b"1234"))
    assert client.failure is not None and client.failure.code == 1009
    (close,) = read_frames(sent(client))
    assert close.masked and close.payload[:2] == b"\x03\xf1"


# ---------------------------------------------------------------------------------------------
# parse_uri
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("ws://example.com", WebSocketURI(False, "example.com", 80, "/")),
        ("ws://example.com/", WebSocketURI(False, "example.com", 80, "/")),
        ("wss://example.com", WebSocketURI(True, "example.com", 443, "/")),
        ("ws://example.com:8080/a/b?c=d&e", WebSocketURI(False, "example.com", 8080, "/a/b?c=d&e")),
        ("wss://example.com:80/", WebSocketURI(True, "example.com", 80, "/")),
        ("ws://127.0.0.1:12345/chat?x=1", WebSocketURI(False, "127.0.0.1", 12345, "/chat?x=1")),
        ("ws://[::1]:8080/", WebSocketURI(False, "::1", 8080, "/")),
        ("wss://[2001:db8::1]/x", WebSocketURI(True, "2001:db8::1", 443, "/x")),
        ("WS://Example.COM/", WebSocketURI(False, "example.com", 80, "/")),
        (
            "ws://user:pass@example.com/",
            WebSocketURI(False, "example.com", 80, "/", ("user", "pass")),
        ),
        ("ws://example.com?q", WebSocketURI(False, "example.com", 80, "/?q")),
    ],
)
def test_parse_uri(uri: str, expected: WebSocketURI) -> None:
    assert parse_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "http://example.com/",
        "https://example.com/",
        "example.com",
        "/path",
        "",
        "ws://",
        "ws:///path",
        "ws://:80/",
        "ws://example.com/#fragment",
        "ws://example.com:99999/",
        "ws://example.com:port/",
        "ws://example.com:-1/",
        "ws://[::1/",
    ],
)
def test_parse_uri_invalid(uri: str) -> None:
    with pytest.raises(InvalidURI):
        parse_uri(uri)


def test_client_rejects_invalid_uri() -> None:
    with pytest.raises(InvalidURI):
        ClientProtocol("http://example.com/")
