"""ServerProtocol: the opening handshake from the server's side, then frames."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Sequence
from http import HTTPStatus

import pytest

from shakehands.protocol.connection import Close, Connection, Ping, State
from shakehands.protocol.errors import (
    HeadersTooLarge,
    InvalidHandshake,
    InvalidOrigin,
    InvalidRequest,
    InvalidState,
    InvalidUpgrade,
    NegotiationError,
    UnsupportedVersion,
)
from shakehands.protocol.frames import Opcode, serialize_close
from shakehands.protocol.handshake import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_LINE,
    Headers,
    Request,
)
from shakehands.protocol.server import MAX_EARLY_DATA, ServerProtocol

from .helpers import (
    RFC_ACCEPT,
    HttpResponse,
    feed_bytewise,
    feed_whole,
    masked,
    read_frames,
    read_response,
    request_bytes,
    sent,
    unmasked,
)

Feed = Callable[[Connection, bytes], None]


@pytest.fixture(params=["whole", "bytewise"])
def feed(request: pytest.FixtureRequest) -> Feed:
    return feed_whole if request.param == "whole" else feed_bytewise


def handshake(
    data: bytes, server: ServerProtocol | None = None, feed: Feed = feed_whole
) -> tuple[ServerProtocol, HttpResponse]:
    """Feed ``data``; if a request comes out, answer it as an I/O layer would."""
    server = server if server is not None else ServerProtocol()
    feed(server, data)
    events = server.events_received()
    if events:
        assert isinstance(events[0], Request)
        assert server.request is events[0]
        server.send_response(server.accept())
    return server, read_response(sent(server))


def assert_accepted(server: ServerProtocol, response: HttpResponse) -> None:
    assert response.status == 101, response
    assert response.reason == "Switching Protocols"
    assert response.get("Upgrade") == "websocket"
    assert response.get("Connection") == "Upgrade"
    assert response.get("Sec-WebSocket-Accept") == RFC_ACCEPT
    assert response.get("Content-Length") is None
    assert server.state is State.OPEN
    assert server.handshake_exc is None
    assert not server.close_expected()
    assert server.response is not None and server.response.status == 101


def assert_refused(
    server: ServerProtocol,
    response: HttpResponse,
    status: int,
    exc_type: type[InvalidHandshake] = InvalidHandshake,
) -> None:
    assert response.status == status, response
    assert response.reason == HTTPStatus(status).phrase
    assert response.get("Content-Type") == "text/plain; charset=utf-8"
    assert response.get("Connection") == "close"
    assert response.get("Sec-WebSocket-Accept") is None
    assert response.body.endswith(b"\n") and len(response.body) > 1
    response.body.decode("utf-8")
    assert response.rest == b""
    assert server.state is State.CLOSED
    assert server.close_expected()
    assert server.handshake_exc is not None
    assert isinstance(server.handshake_exc, exc_type)
    assert server.handshake_exc.status == status
    # Nothing more is read or written.
    server.receive_data(masked(Opcode.TEXT, b"hi"))
    assert server.events_received() == []
    assert server.data_to_send() == []
    with pytest.raises(InvalidState):
        server.send_text("no")


# ---------------------------------------------------------------------------------------------
# Accepting
# ---------------------------------------------------------------------------------------------


def test_valid_request_gets_101(feed: Feed) -> None:
    server, response = handshake(request_bytes(), feed=feed)
    assert_accepted(server, response)
    assert response.rest == b""
    assert response.get("Sec-WebSocket-Protocol") is None
    # And the connection works, both ways.
    server.receive_data(masked(Opcode.TEXT, b"hello"))
    assert server.events_received() == ["hello"]
    server.send_text("world")
    (frame,) = read_frames(sent(server))
    assert not frame.masked and frame.payload == b"world"


def test_handshake_headers_keep_no_index_after_101() -> None:
    # Idle memory: the request and the response stay (ws.request, ws.response) but not their
    # lookup indexes, and their pairs are packed into one string; looking a header up
    # afterwards still works.
    server, response = handshake(request_bytes())
    assert_accepted(server, response)
    assert server.request is not None and server.response is not None
    assert server.request.headers._index is None
    assert server.response.headers._index is None
    assert isinstance(server.request.headers._items, str)
    assert isinstance(server.response.headers._items, str)
    assert ("Sec-WebSocket-Version", "13") in server.request.headers.items()
    assert server.request.headers["upgrade"].lower() == "websocket"
    assert server.response.headers.get("sec-websocket-accept") == response.get(
        "Sec-WebSocket-Accept"
    )


def _fields(request: Request) -> tuple[object, ...]:
    return (
        request.method,
        request.target,
        request.version,
        request.remote_address,
        request.authority,
        request.headers.items(),
    )


@pytest.mark.parametrize(
    "address",
    [None, "", "/tmp/ws.sock", ("127.0.0.1", 54321), ("::1", 8765, 0, 3)],
)
@pytest.mark.parametrize(
    "data",
    [
        request_bytes(),
        request_bytes(target="ws://example.com:8080/chat?room=a%20b&x=1"),
        request_bytes(
            extra=[("X-Odd", "a: b\tc"), ("X-Latin", "caf\xe9"), ("X-Empty", ""), ("x-odd", "2")]
        ),
        # What a browser sends: most lines are in the packing table, some in part.
        request_bytes(
            target="/chat",
            headers=[
                ("Host", "example.com"),
                ("Connection", "keep-alive, Upgrade"),
                ("Pragma", "no-cache"),
                ("Cache-Control", "no-cache"),
                ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0"),
                ("Upgrade", "websocket"),
                ("Origin", "https://example.com"),
                ("Sec-WebSocket-Version", "13"),
                ("Accept-Encoding", "gzip, deflate, br, zstd"),
                ("Accept-Language", "en-US,en;q=0.9"),
                ("Cookie", "Upgrade:websocket"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
                ("Sec-WebSocket-Protocol", "chat, superchat"),
            ],
        ),
    ],
    ids=["plain", "absolute-form", "odd-values", "browser"],
)
def test_packed_request_is_unpacked_equal_on_first_read(data: bytes, address: object) -> None:
    # Idle memory: the request packed into one string (pack_request) is a Request again, equal
    # to the one parsed, when it is next read; the same object from then on.
    server, response = handshake(data)
    assert_accepted(server, response)
    request = server.request
    assert request is not None
    request.remote_address = address  # type: ignore[assignment]
    expected = _fields(request)
    server.pack_request()
    assert isinstance(server._request, str)
    del request
    unpacked = server.request
    assert isinstance(unpacked, Request)
    assert unpacked.headers._index is None and isinstance(unpacked.headers._items, str)
    assert _fields(unpacked) == expected
    assert type(unpacked.remote_address) is type(address)
    assert server.request is unpacked
    # Its lookups and context work as on any request; once unpacked it stays so.
    assert unpacked.headers["sec-websocket-version"] == "13"
    unpacked.context["user"] = "alice"
    server.pack_request()  # context set: the application's dictionary is kept as it is
    assert server.request is unpacked and server.request.context == {"user": "alice"}
    # And the connection works on.
    server.receive_data(masked(Opcode.TEXT, b"hello"))
    assert server.events_received() == ["hello"]


def test_packing_leaves_requests_it_cannot_hold_exactly() -> None:
    from shakehands.protocol.server import pack_request, unpack_request

    def kept(request: Request) -> bool:
        return pack_request(request) is None

    headers = Headers([("Host", "a")])
    assert not kept(Request("GET", "/", headers, remote_address=("h", 1)))
    # A line feed in a field, headers built by hand that one string cannot hold, another
    # shape of address, an empty version, a subclass, a context set.
    assert kept(Request("GET", "/\n", headers))
    assert kept(Request("GET", "/", Headers([("X", "a\nb")])))
    assert kept(Request("GET", "/", Headers([("X:Y", "a")])))
    assert kept(Request("GET", "/", headers, remote_address=("h", 1, 2)))  # type: ignore[arg-type]
    assert kept(Request("GET", "/", headers, remote_address=("h\t", 1)))
    assert kept(Request("GET", "/", headers, remote_address=["h", 1]))  # type: ignore[arg-type]
    assert kept(Request("GET", "/", headers, remote_address=("h", True)))  # type: ignore[arg-type]
    assert kept(Request("GET", "/", headers, version=""))
    assert kept(Request("GET", "/", Headers([("X", "a\x0bb")])))  # a table code, by hand
    assert kept(Request("GET", "/", headers, authority="a\nb"))

    class MyRequest(Request):
        pass

    assert kept(MyRequest("GET", "/", headers))
    with_context = Request("GET", "/", headers)
    with_context.context["k"] = 1
    assert kept(with_context)
    # What it packs comes back equal (an empty authority too), and the method is shared.
    for request in (
        Request("GET", "/a", Headers(), authority=""),
        Request("OPTIONS", "/", Headers([("A", "1"), ("a", "2")]), version="HTTP/1.0"),
    ):
        packed = pack_request(request)
        assert packed is not None
        again = unpack_request(packed)
        assert again == request and again.authority == request.authority
        assert again.method is request.method


def test_request_of_an_http2_stream_is_not_packed() -> None:
    # The I/O layer made it (receive_http2_request) and may hold it.
    server = ServerProtocol()
    request = Request(
        "CONNECT",
        "/chat",
        Headers([("Host", "a"), ("Sec-WebSocket-Version", "13")]),
        version="HTTP/2",
    )
    server.receive_http2_request(request)
    server.send_response(server.accept())
    assert server.state is State.OPEN
    server.pack_request()
    assert server.request is request


def test_server_starts_connecting() -> None:
    server = ServerProtocol()
    assert server.state is State.CONNECTING
    assert not server.close_expected()
    with pytest.raises(InvalidState):
        server.send_text("too early")
    with pytest.raises(InvalidHandshake):
        server.accept()


def test_incomplete_request_is_not_an_event() -> None:
    server = ServerProtocol()
    data = request_bytes()
    server.receive_data(data[:-1])
    assert server.events_received() == []
    assert server.data_to_send() == []
    server.receive_data(data[-1:])
    (request,) = server.events_received()
    assert isinstance(request, Request)
    assert server.state is State.CONNECTING  # until the response is sent
    assert server.data_to_send() == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"replace": {"Connection": "keep-alive, Upgrade"}},
        {"replace": {"Connection": "UPGRADE"}},
        {"replace": {"Upgrade": "WebSocket"}},
        {"replace": {"Upgrade": "WEBSOCKET", "Connection": "upgrade"}},
        {"extra": [("Content-Length", "0")]},
        {"replace": {"Host": "example.com:8080"}},
        {"extra": [("X-Custom", "value with spaces, commas; and \xe9")]},
    ],
)
def test_valid_variants_are_accepted(kwargs: dict, feed: Feed) -> None:
    server, response = handshake(request_bytes(**kwargs), feed=feed)
    assert_accepted(server, response)


def test_header_names_are_case_insensitive() -> None:
    data = request_bytes().replace(b"Sec-WebSocket-Key", b"sec-websocket-key")
    data = data.replace(b"Host", b"HOST")
    server, response = handshake(data)
    assert_accepted(server, response)


def test_accept_with_extra_headers() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes())
    server.events_received()
    server.send_response(server.accept(extra_headers=[("Set-Cookie", "a=b")]))
    response = read_response(sent(server))
    assert_accepted(server, response)
    assert response.get("Set-Cookie") == "a=b"


def test_request_properties() -> None:
    data = request_bytes(
        target="/chat/room?x=1&y=2",
        extra=[
            ("Origin", "https://a.example"),
            ("Sec-WebSocket-Protocol", "chat, superchat"),
            ("Sec-WebSocket-Protocol", "v2"),
        ],
    )
    server = ServerProtocol()
    server.receive_data(data)
    (request,) = server.events_received()
    assert isinstance(request, Request)
    assert request.method == "GET"
    assert request.path == "/chat/room"
    assert request.query == "x=1&y=2"
    assert request.origin == "https://a.example"
    assert request.host == "example.com"
    assert request.subprotocols == ["chat", "superchat", "v2"]
    assert request.remote_address is None

    server = ServerProtocol()
    server.receive_data(request_bytes(target="/"))
    (request,) = server.events_received()
    assert (request.path, request.query, request.origin, request.subprotocols) == (
        "/",
        "",
        None,
        [],
    )


def test_request_parser_bytewise_gives_same_request() -> None:
    data = request_bytes(
        target="/a/b?c=d", extra=[("Origin", "http://o"), ("Sec-WebSocket-Protocol", "x")]
    )
    whole = ServerProtocol()
    whole.receive_data(data)
    bytewise = ServerProtocol()
    feed_bytewise(bytewise, data)
    (a,) = whole.events_received()
    (b,) = bytewise.events_received()
    assert a == b
    whole.send_response(whole.accept())
    bytewise.send_response(bytewise.accept())
    assert sent(whole) == sent(bytewise)


# ---------------------------------------------------------------------------------------------
# Refusing
# ---------------------------------------------------------------------------------------------


def _key(n: int) -> str:
    return base64.b64encode(b"k" * n).decode()


REFUSALS: list[tuple[str, bytes, int, type[InvalidHandshake]]] = [
    ("missing Host", request_bytes(drop=["Host"]), 400, InvalidRequest),
    ("duplicate Host", request_bytes(extra=[("Host", "b.example")]), 400, InvalidRequest),
    ("missing Upgrade", request_bytes(drop=["Upgrade"]), 426, InvalidUpgrade),
    ("Upgrade h2c", request_bytes(replace={"Upgrade": "h2c"}), 400, InvalidUpgrade),
    ("missing Connection", request_bytes(drop=["Connection"]), 400, InvalidUpgrade),
    (
        "Connection keep-alive",
        request_bytes(replace={"Connection": "keep-alive"}),
        400,
        InvalidUpgrade,
    ),
    ("missing key", request_bytes(drop=["Sec-WebSocket-Key"]), 400, InvalidUpgrade),
    ("15-byte key", request_bytes(replace={"Sec-WebSocket-Key": _key(15)}), 400, InvalidUpgrade),
    ("17-byte key", request_bytes(replace={"Sec-WebSocket-Key": _key(17)}), 400, InvalidUpgrade),
    (
        "non-base64 key",
        request_bytes(replace={"Sec-WebSocket-Key": "!!!!notbase64!!!!!!!!!=="}),
        400,
        InvalidUpgrade,
    ),
    (
        "unpadded key",
        request_bytes(replace={"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ"}),
        400,
        InvalidUpgrade,
    ),
    (
        "duplicate key",
        request_bytes(extra=[("Sec-WebSocket-Key", _key(16))]),
        400,
        InvalidRequest,
    ),
    (
        "version 8",
        request_bytes(replace={"Sec-WebSocket-Version": "8"}),
        426,
        UnsupportedVersion,
    ),
    ("missing version", request_bytes(drop=["Sec-WebSocket-Version"]), 426, UnsupportedVersion),
    ("POST", request_bytes(method="POST"), 405, InvalidRequest),
    ("HTTP/1.0", request_bytes(version="HTTP/1.0"), 400, InvalidRequest),
    ("garbage request line", b"HELLO THERE\r\n\r\n", 400, InvalidRequest),
    ("binary garbage", b"\x00\x01\x02\x03", 400, InvalidRequest),
    (
        "request line over 8 KiB",
        request_bytes(target="/" + "a" * MAX_LINE),
        400,
        InvalidRequest,
    ),
    (
        "too many headers",
        request_bytes(extra=[(f"X-H{i}", "v") for i in range(MAX_HEADERS)]),
        431,
        HeadersTooLarge,
    ),
    (
        "header block over 8 KiB",
        request_bytes(extra=[("X-Big", "b" * MAX_HEADER_BYTES)]),
        431,
        HeadersTooLarge,
    ),
    (
        "many medium headers over 8 KiB",
        request_bytes(extra=[(f"X-M{i}", "m" * 200) for i in range(50)]),
        431,
        HeadersTooLarge,
    ),
    (
        "obs-fold",
        request_bytes().replace(b"Upgrade: websocket\r\n", b"Upgrade:\r\n websocket\r\n"),
        400,
        InvalidRequest,
    ),
    ("header name with space", request_bytes(extra=[("X Bad", "v")]), 400, InvalidRequest),
    (
        "space before colon",
        request_bytes().replace(b"Host:", b"Host :"),
        400,
        InvalidRequest,
    ),
    ("control char in value", request_bytes(extra=[("X-C", "a\x01b")]), 400, InvalidRequest),
    ("NUL in value", request_bytes(extra=[("X-C", "a\x00b")]), 400, InvalidRequest),
    (
        "Transfer-Encoding",
        request_bytes(extra=[("Transfer-Encoding", "chunked")]),
        400,
        InvalidRequest,
    ),
    (
        "Transfer-Encoding identity",
        request_bytes(extra=[("Transfer-Encoding", "identity")]),
        400,
        InvalidRequest,
    ),
    ("Content-Length 5", request_bytes(extra=[("Content-Length", "5")]), 400, InvalidRequest),
    (
        "duplicate Origin",
        request_bytes(extra=[("Origin", "http://a"), ("Origin", "http://b")]),
        400,
        InvalidRequest,
    ),
]


@pytest.mark.parametrize(
    ("data", "status", "exc_type"),
    [pytest.param(d, s, e, id=name) for name, d, s, e in REFUSALS],
)
def test_refusals(data: bytes, status: int, exc_type: type[InvalidHandshake], feed: Feed) -> None:
    server, response = handshake(data, feed=feed)
    assert_refused(server, response, status, exc_type)


def test_missing_upgrade_426_names_websocket() -> None:
    server, response = handshake(request_bytes(drop=["Upgrade"]))
    assert_refused(server, response, 426)
    assert response.get("Upgrade") == "websocket"
    assert response.get("Sec-WebSocket-Version") == "13"


@pytest.mark.parametrize("version", ["8", "12", "14", "13, 8", None])
def test_unsupported_version_426_names_13(version: str | None) -> None:
    if version is None:
        data = request_bytes(drop=["Sec-WebSocket-Version"])
    else:
        data = request_bytes(replace={"Sec-WebSocket-Version": version})
    server, response = handshake(data)
    assert_refused(server, response, 426, UnsupportedVersion)
    assert response.get("Sec-WebSocket-Version") == "13"


def test_post_405_allows_get() -> None:
    server, response = handshake(request_bytes(method="POST"))
    assert_refused(server, response, 405)
    assert response.get("Allow") == "GET"


def test_tls_client_hello_refused_immediately() -> None:
    server = ServerProtocol()
    server.receive_data(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(32))
    assert server.events_received() == []
    response = read_response(sent(server))
    assert_refused(server, response, 400, InvalidRequest)


def test_tls_client_hello_first_byte_is_enough() -> None:
    server = ServerProtocol()
    server.receive_data(b"\x16")
    assert server.state is State.CLOSED
    assert_refused(server, read_response(sent(server)), 400, InvalidRequest)


def test_long_request_line_refused_before_crlf() -> None:
    server = ServerProtocol()
    server.receive_data(b"GET /" + b"a" * (MAX_LINE + 10))
    assert_refused(server, read_response(sent(server)), 400, InvalidRequest)


def test_large_header_block_refused_before_end() -> None:
    server = ServerProtocol()
    server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (MAX_HEADER_BYTES + 10))
    assert_refused(server, read_response(sent(server)), 431, HeadersTooLarge)


@pytest.mark.parametrize("count", [MAX_HEADERS - 5, MAX_HEADERS - 4])
def test_header_count_just_under_and_over(count: int) -> None:
    # The request already has 5 headers.
    server, response = handshake(request_bytes(extra=[(f"X-{i}", "v") for i in range(count)]))
    if count + 5 <= MAX_HEADERS:
        assert_accepted(server, response)
    else:
        assert_refused(server, response, 431)


def test_bare_lf_request_is_not_accepted() -> None:
    data = request_bytes().replace(b"\r\n", b"\n")
    server = ServerProtocol()
    server.receive_data(data)
    assert server.events_received() == []
    assert server.state is not State.OPEN
    out = sent(server)
    assert b"101" not in out
    # The client gives up: the handshake failed, nothing was accepted.
    server.receive_eof()
    assert server.state is State.CLOSED
    assert server.handshake_exc is not None
    assert server.close_expected()
    assert server.data_to_send() == []


def test_bare_lf_request_is_refused_once_too_long() -> None:
    data = request_bytes().replace(b"\r\n", b"\n")
    server = ServerProtocol()
    server.receive_data(data + b"X-Pad: " + b"p" * MAX_LINE + b"\n")
    assert server.events_received() == []
    assert_refused(server, read_response(sent(server)), 400)


def test_eof_during_handshake() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes()[:20])
    server.receive_eof()
    assert server.state is State.CLOSED
    assert isinstance(server.handshake_exc, InvalidRequest)
    assert server.close_expected()
    assert server.data_to_send() == []
    assert server.events_received() == []


def test_reject_custom_response() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes())
    server.events_received()
    server.send_response(server.reject(HTTPStatus.NOT_FOUND, "no such room"))
    response = read_response(sent(server))
    assert_refused(server, response, 404)
    assert response.body == b"no such room\n"


def test_send_response_twice_raises() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes())
    server.send_response(server.accept())
    with pytest.raises(InvalidHandshake):
        server.send_response(server.accept())


def test_refusal_after_request_discards_early_frames() -> None:
    data = request_bytes(drop=["Sec-WebSocket-Key"]) + masked(Opcode.TEXT, b"early")
    server, response = handshake(data)
    assert_refused(server, response, 400)


# ---------------------------------------------------------------------------------------------
# Origins
# ---------------------------------------------------------------------------------------------


def test_allowed_origin_is_accepted() -> None:
    server = ServerProtocol(origins=["https://a.example"])
    server, response = handshake(
        request_bytes(extra=[("Origin", "https://a.example")]), server=server
    )
    assert_accepted(server, response)


@pytest.mark.parametrize(
    "origin", ["https://b.example", "http://a.example", "https://a.example:443", "null"]
)
def test_other_origins_are_refused(origin: str) -> None:
    server = ServerProtocol(origins=["https://a.example"])
    server, response = handshake(request_bytes(extra=[("Origin", origin)]), server=server)
    assert_refused(server, response, 403, InvalidOrigin)


def test_missing_origin_is_refused() -> None:
    server = ServerProtocol(origins=["https://a.example"])
    server, response = handshake(request_bytes(), server=server)
    assert_refused(server, response, 403, InvalidOrigin)


def test_missing_origin_allowed_with_none() -> None:
    server = ServerProtocol(origins=["https://a.example", None])
    server, response = handshake(request_bytes(), server=server)
    assert_accepted(server, response)
    server = ServerProtocol(origins=["https://a.example", None])
    server, response = handshake(request_bytes(extra=[("Origin", "https://x")]), server=server)
    assert_refused(server, response, 403)


def test_no_origin_policy_accepts_anything() -> None:
    server, response = handshake(request_bytes(extra=[("Origin", "https://evil.example")]))
    assert_accepted(server, response)


# ---------------------------------------------------------------------------------------------
# Subprotocols
# ---------------------------------------------------------------------------------------------


def _with_protocols(*values: str) -> bytes:
    return request_bytes(extra=[("Sec-WebSocket-Protocol", v) for v in values])


def test_server_picks_first_client_offer_it_supports() -> None:
    server = ServerProtocol(subprotocols=["superchat", "chat"])
    server, response = handshake(_with_protocols("chat, superchat"), server=server)
    assert_accepted(server, response)
    assert response.get("Sec-WebSocket-Protocol") == "chat"
    assert server.subprotocol == "chat"


def test_subprotocol_offers_across_headers() -> None:
    server = ServerProtocol(subprotocols=["v2"])
    server, response = handshake(_with_protocols("v1", "v2, v3"), server=server)
    assert response.get("Sec-WebSocket-Protocol") == "v2"


def test_no_subprotocol_in_common() -> None:
    server = ServerProtocol(subprotocols=["mqtt"])
    server, response = handshake(_with_protocols("chat, superchat"), server=server)
    assert_accepted(server, response)
    assert response.get_all("Sec-WebSocket-Protocol") == []
    assert server.subprotocol is None


def test_subprotocols_are_case_sensitive() -> None:
    server = ServerProtocol(subprotocols=["Chat"])
    server, response = handshake(_with_protocols("chat"), server=server)
    assert response.get_all("Sec-WebSocket-Protocol") == []


def test_client_offers_none() -> None:
    server = ServerProtocol(subprotocols=["chat"])
    server, response = handshake(request_bytes(), server=server)
    assert_accepted(server, response)
    assert response.get_all("Sec-WebSocket-Protocol") == []


def test_select_subprotocol_callback() -> None:
    calls: list[tuple[Request, list[str]]] = []

    def select(request: Request, offered: Sequence[str]) -> str | None:
        calls.append((request, list(offered)))
        return offered[-1]

    server = ServerProtocol(subprotocols=["a"], select_subprotocol=select)
    server, response = handshake(_with_protocols("a, b, c"), server=server)
    assert_accepted(server, response)
    assert response.get("Sec-WebSocket-Protocol") == "c"
    assert server.subprotocol == "c"
    assert len(calls) == 1
    assert calls[0][0] is server.request
    assert calls[0][1] == ["a", "b", "c"]


def test_select_subprotocol_callback_returning_none() -> None:
    server = ServerProtocol(select_subprotocol=lambda request, offered: None)
    server, response = handshake(_with_protocols("a"), server=server)
    assert_accepted(server, response)
    assert response.get_all("Sec-WebSocket-Protocol") == []


def test_select_subprotocol_callback_picking_unoffered_protocol() -> None:
    server = ServerProtocol(select_subprotocol=lambda request, offered: "not-offered")
    server, response = handshake(_with_protocols("a, b"), server=server)
    assert_refused(server, response, 400, NegotiationError)
    assert server.subprotocol is None


# ---------------------------------------------------------------------------------------------
# Frames around the handshake
# ---------------------------------------------------------------------------------------------


def test_frames_in_same_bytes_as_request(feed: Feed) -> None:
    data = (
        request_bytes()
        + masked(Opcode.TEXT, b"early")
        + masked(Opcode.PING, b"p")
        + masked(Opcode.BINARY, b"bin", fin=False)
    )
    server = ServerProtocol()
    feed(server, data)
    (request,) = server.events_received()
    assert isinstance(request, Request)
    assert server.data_to_send() == []  # nothing answered before the 101
    server.send_response(server.accept())
    assert server.events_received() == ["early", Ping(b"p")]
    out = sent(server)
    response = read_response(out)
    assert response.status == 101
    assert response.rest == unmasked(Opcode.PONG, b"p")
    server.receive_data(masked(Opcode.CONT, b"ary"))
    assert server.events_received() == [b"binary"]


def test_frames_between_request_and_response() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes())
    server.events_received()
    two = masked(Opcode.TEXT, b"two")
    server.receive_data(masked(Opcode.TEXT, b"one"))
    server.receive_data(two[:3])
    assert server.events_received() == []
    server.send_response(server.accept())
    assert server.events_received() == ["one"]
    server.receive_data(two[3:])
    assert server.events_received() == ["two"]


def test_early_invalid_frame_fails_after_101() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes() + unmasked(Opcode.TEXT, b"unmasked"))
    server.events_received()
    server.send_response(server.accept())
    assert server.failure is not None and server.failure.code == 1002
    out = sent(server)
    response = read_response(out)
    assert response.status == 101
    (close,) = read_frames(response.rest)
    assert close.opcode == Opcode.CLOSE
    assert close.payload[:2] == b"\x03\xea"


def test_early_close_frame_after_101() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes() + masked(Opcode.CLOSE, serialize_close(1001, "bye")))
    server.events_received()
    server.send_response(server.accept())
    assert server.events_received() == [Close(1001, "bye")]
    server.data_to_send()
    assert server.state is State.CLOSED
    assert server.close_expected()


def test_too_much_early_data_is_refused() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes())
    server.events_received()
    server.receive_data(b"\x00" * MAX_EARLY_DATA)
    assert server.data_to_send() == []
    server.receive_data(b"\x00")
    assert_refused(server, read_response(sent(server)), 400, InvalidRequest)


def test_too_much_early_data_in_same_read_as_request() -> None:
    """The early-data bound holds however the bytes arrive, including with the request."""
    data = request_bytes() + b"\x00" * (MAX_EARLY_DATA + 1)
    server = ServerProtocol()
    server.receive_data(data)
    (request,) = server.events_received()
    assert isinstance(request, Request)
    assert_refused(server, read_response(sent(server)), 400, InvalidRequest)

    # Exactly at the bound: kept, and parsed after the 101 (here: as a bad frame).
    server = ServerProtocol()
    server.receive_data(request_bytes() + b"\x00" * MAX_EARLY_DATA)
    assert server.data_to_send() == []
    server.send_response(server.accept())
    server.data_to_send()
    assert server.state is State.CLOSED
    assert server.failure is not None and server.failure.code == 1002


def test_custom_limits_are_used() -> None:
    server = ServerProtocol(max_line=30)
    server, response = handshake(request_bytes(target="/" + "a" * 30), server=server)
    assert_refused(server, response, 400)
    server = ServerProtocol(max_headers=4)
    server, response = handshake(request_bytes(), server=server)
    assert_refused(server, response, 431)
    server = ServerProtocol(max_header_bytes=50)
    server, response = handshake(request_bytes(), server=server)
    assert_refused(server, response, 431)


def test_message_limits_are_used() -> None:
    server = ServerProtocol(max_message_size=4)
    server.receive_data(request_bytes())
    server.send_response(server.accept())
    sent(server)
    server.receive_data(masked(Opcode.BINARY, b"12345"))
    assert server.failure is not None and server.failure.code == 1009
