"""HTTP parsing and handshake helpers (RFC 6455 §4, RFC 9112), without a connection."""

from __future__ import annotations

import base64
import hashlib
import random
from typing import Any

import pytest

from shakehands.protocol import http11
from shakehands.protocol.errors import (
    HeadersTooLarge,
    InvalidHandshake,
    InvalidRequest,
    InvalidResponse,
    InvalidUpgrade,
    UnsupportedVersion,
)
from shakehands.protocol.handshake import (
    GUID,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_LINE,
    Headers,
    Request,
    RequestParser,
    Response,
    ResponseParser,
    accept_key,
    build_accept_response,
    build_request,
    check_request,
    check_response,
    error_response,
    generate_key,
    parse_token_list,
)

from .helpers import RFC_ACCEPT, RFC_KEY, read_response, request_bytes


@pytest.fixture(autouse=True, params=["compiled", "python"])
def head_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test of this module runs against both request-head parsers: the C one of
    ``_speedups`` (skipped when it is not built or disabled) and the pure-Python one."""
    if request.param == "python":
        monkeypatch.setattr(http11, "_parse_request_head", None)
    elif http11._parse_request_head is None:
        pytest.skip("the C request-head parser is not in use")
    return str(request.param)


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------


def test_accept_key_rfc_vector() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_accept_key_definition() -> None:
    key = generate_key()
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    assert accept_key(key) == base64.b64encode(digest).decode()
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def test_generate_key() -> None:
    keys = {generate_key() for _ in range(16)}
    assert len(keys) == 16
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 16


# ---------------------------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------------------------


def test_headers_multimap() -> None:
    h = Headers([("Host", "a"), ("X-Thing", "1"), ("x-thing", "2")])
    assert h["HOST"] == "a"
    assert h.get("x-THING") == "1"
    assert h.get_all("X-Thing") == ["1", "2"]
    assert h.get_all("missing") == []
    assert h.get("missing") is None
    assert h.get("missing", "d") == "d"
    assert "host" in h
    assert "nope" not in h
    assert 42 not in h
    assert len(h) == 3
    assert list(h) == ["Host", "X-Thing", "x-thing"]
    assert h.items() == [("Host", "a"), ("X-Thing", "1"), ("x-thing", "2")]
    with pytest.raises(KeyError):
        h["missing"]
    assert h == Headers([("host", "a"), ("x-thing", "1"), ("X-THING", "2")])
    assert h != Headers([("Host", "a")])


def test_headers_index_is_lazy_and_can_be_released() -> None:
    # The lookup index is built on demand and dropped after the handshake (idle memory):
    # lookups give the same answers before, after and across adds in either state.
    h = Headers([("Host", "a")])
    assert h._index is None
    h.add("X-Thing", "1")
    assert h.get_all("x-thing") == ["1"]
    assert h._index is not None
    h.add("x-THING", "2")  # added to the index that is there
    assert h.get_all("X-Thing") == ["1", "2"]
    h._compact()
    assert h._index is None and isinstance(h._items, str)
    h.add("X-Thing", "3")  # added while packed and without index
    assert h.get_all("X-THING") == ["1", "2", "3"]
    assert h["host"] == "a" and "HOST" in h
    assert h.items() == [("Host", "a"), ("X-Thing", "1"), ("x-THING", "2"), ("X-Thing", "3")]


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("X-Empty", "")],
        [("Host", "example.com:8080"), ("X-Colons", "a:b::c"), ("X-Space", "  padded \t")],
        [("Cookie", "a=1"), ("cookie", "b=2"), ("X-Latin", "caf\xe9")],
    ],
)
def test_headers_compact_round_trip(pairs: list[tuple[str, str]]) -> None:
    h = Headers(pairs)
    h._compact()
    assert isinstance(h._items, str)
    assert h.items() == pairs and len(h) == len(pairs)
    assert h == Headers(pairs)


@pytest.mark.parametrize("pairs", [[("X:Bad", "v")], [("X-Bad", "line\nfeed")], [("X\nBad", "v")]])
def test_headers_compact_leaves_ambiguous_pairs_alone(pairs: list[tuple[str, str]]) -> None:
    # Only hand-built headers can hold these; packing them would change them, so it is skipped.
    h = Headers(pairs)
    h._compact()
    assert isinstance(h._items, list) and h.items() == pairs


def test_parse_token_list() -> None:
    assert parse_token_list(["keep-alive, Upgrade", " , foo ,,\tBar"]) == [
        "keep-alive",
        "upgrade",
        "foo",
        "bar",
    ]
    assert parse_token_list([]) == []


# ---------------------------------------------------------------------------------------------
# RequestParser
# ---------------------------------------------------------------------------------------------


def feed_in_steps(parser: Any, data: bytes, step: int | None) -> Any:
    """What ``parser.feed`` returns once it has a result, fed ``data`` ``step`` bytes at a time
    (all at once for ``None``); ``None`` if it never has one."""
    step = step or max(len(data), 1)
    result = None
    for i in range(0, len(data), step):
        result = parser.feed(data[i : i + step])
        if result is not None:
            break
    return result


def parse_request(data: bytes, step: int | None = None) -> tuple[Request | None, RequestParser]:
    parser = RequestParser()
    return feed_in_steps(parser, data, step), parser


def test_parse_request() -> None:
    data = request_bytes(target="/chat/room?x=1&y=%20", extra=[("Origin", "https://a.example")])
    request, parser = parse_request(data + b"\x81\x80more")
    assert request is not None
    assert request.method == "GET"
    assert request.target == "/chat/room?x=1&y=%20"
    assert request.version == "HTTP/1.1"
    assert request.path == "/chat/room"
    assert request.query == "x=1&y=%20"
    assert request.host == "example.com"
    assert request.origin == "https://a.example"
    assert request.is_upgrade
    assert request.headers["sec-websocket-key"] == RFC_KEY
    assert parser.rest == b"\x81\x80more"


@pytest.mark.parametrize(
    ("target", "authority", "origin_form"),
    [
        ("ws://example.com/chat?x=1", "example.com", "/chat?x=1"),
        ("http://EXAMPLE.com:8080/", "EXAMPLE.com:8080", "/"),
        ("WSS://[::1]:443/a/b", "[::1]:443", "/a/b"),
        ("https://h.example", "h.example", "/"),
        ("http://h.example?q", "h.example", "/?q"),
    ],
)
def test_absolute_form_target_is_accepted(target: str, authority: str, origin_form: str) -> None:
    """RFC 9112 §3.2.2: a server MUST accept the absolute-form, and take the host from it."""
    request, _ = parse_request(request_bytes(target=target))
    assert request is not None
    assert request.target == origin_form
    assert request.authority == authority
    assert request.host == authority  # not the Host header's example.com


@pytest.mark.parametrize(
    "target", ["ftp://h/x", "ws:///x", "ws://h x/", "example.com/chat", "*", "ws://", "http:/x"]
)
def test_other_targets_are_rejected(target: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_request(request_bytes(target=target))


def test_parse_request_bytewise_gives_same_result() -> None:
    data = request_bytes(
        target="/p?q",
        extra=[("Origin", "https://a.example"), ("Sec-WebSocket-Protocol", "a, b")],
    )
    whole, _ = parse_request(data)
    assert whole is not None
    for step in (1, 2, 3, 7):
        request, parser = parse_request(data, step)
        assert request == whole, step
        assert parser.rest == b""
    # Bytes after the head, in the same read as its last byte, are kept.
    parser = RequestParser()
    for byte in data[:-1]:
        assert parser.feed(bytes([byte])) is None
    assert parser.feed(data[-1:] + b"frames") == whole
    assert parser.rest == b"frames"


def test_request_values_are_stripped_and_latin1() -> None:
    data = request_bytes().replace(b"\r\n\r\n", b"\r\nX-A:\t sp\xe9ced \t\r\n\r\n")
    request, _ = parse_request(data)
    assert request is not None
    assert request.headers["X-A"] == "spéced"


def test_request_without_headers() -> None:
    request, _ = parse_request(b"GET / HTTP/1.1\r\n\r\n")
    assert request is not None
    assert len(request.headers) == 0
    assert request.host is None
    assert not request.is_upgrade


def test_request_serialize_round_trip() -> None:
    request = build_request("ws://example.com:8080/a?b=c", RFC_KEY, origin="http://o")
    parsed, _ = parse_request(request.serialize())
    assert parsed == request


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET / http/1.1\r\nHost: x\r\n\r\n",
        b"GET /  HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"GET /\r\nHost: x\r\n\r\n",
        b"GET\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
        b"GET * HTTP/1.1\r\n\r\n",
        b"GET /a\x7fb HTTP/1.1\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
        b" GET / HTTP/1.1\r\n\r\n",
        b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n: empty name\r\n\r\n",
        b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nName : x\r\n\r\n",
        b"GET / HTTP/1.1\r\nN\xe9: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\tfolded: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\nEvil: b\r\n\r\n",
    ],
)
def test_invalid_requests(data: bytes) -> None:
    for step in (None, 1):
        with pytest.raises(InvalidRequest) as info:
            parse_request(data, step)
        assert info.value.status == 400


def test_garbage_fails_before_any_crlf() -> None:
    parser = RequestParser()
    with pytest.raises(InvalidRequest):
        parser.feed(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    parser = RequestParser()
    with pytest.raises(InvalidRequest):
        parser.feed(b"GE\x00")
    # A plausible method is not refused early.
    assert RequestParser().feed(b"GET") is None
    assert RequestParser().feed(b"GET /not-yet") is None


def test_bare_lf_request_is_never_a_request() -> None:
    data = b"GET / HTTP/1.1\nHost: x\nUpgrade: websocket\n\n"
    parser = RequestParser()
    assert parser.feed(data) is None
    with pytest.raises(InvalidRequest):
        parser.feed(b"x" * MAX_LINE)


def _line_of(length: int) -> bytes:
    line = b"GET /" + b"a" * (length - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == length
    return line


@pytest.mark.parametrize("step", [None, 1, 1000])
def test_request_line_limit(step: int | None) -> None:
    ok = _line_of(MAX_LINE) + b"\r\nHost: x\r\n\r\n"
    request, _ = parse_request(ok, step)
    assert request is not None
    too_long = _line_of(MAX_LINE + 1) + b"\r\nHost: x\r\n\r\n"
    with pytest.raises(InvalidRequest) as info:
        parse_request(too_long, step)
    assert info.value.status == 400


def test_request_line_limit_without_crlf() -> None:
    parser = RequestParser()
    assert parser.feed(b"GET /" + b"a" * (MAX_LINE - 5)) is None
    with pytest.raises(InvalidRequest):
        parser.feed(b"aa")


def test_long_token_without_space_fed_byte_by_byte_is_refused_at_the_limit() -> None:
    """A request line that never ends is refused as soon as it passes the limit."""
    parser = RequestParser()
    fed = 0
    with pytest.raises(InvalidRequest):
        for _ in range(MAX_LINE + 2):
            fed += 1
            parser.feed(b"A")
    assert fed == MAX_LINE + 2


def _block_of(length: int) -> bytes:
    prefix = b"Host: x\r\nX-Fill: "
    block = prefix + b"a" * (length - len(prefix))
    assert len(block) == length
    return block


@pytest.mark.parametrize("step", [None, 1, 2, 3, 1000])
def test_header_bytes_limit(step: int | None) -> None:
    for size in (MAX_HEADER_BYTES - 3, MAX_HEADER_BYTES - 1, MAX_HEADER_BYTES):
        ok = b"GET / HTTP/1.1\r\n" + _block_of(size) + b"\r\n\r\n"
        request, _ = parse_request(ok, step)
        assert request is not None, size
    too_big = b"GET / HTTP/1.1\r\n" + _block_of(MAX_HEADER_BYTES + 1) + b"\r\n\r\n"
    with pytest.raises(HeadersTooLarge) as info:
        parse_request(too_big, step)
    assert info.value.status == 431


def test_header_bytes_limit_fails_before_end_of_head() -> None:
    parser = RequestParser()
    assert parser.feed(b"GET / HTTP/1.1\r\nHost: x\r\n") is None
    with pytest.raises(HeadersTooLarge):
        parser.feed(b"X: " + b"a" * MAX_HEADER_BYTES)


@pytest.mark.parametrize("step", [None, 1])
def test_header_count_limit(step: int | None) -> None:
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS))
    request, _ = parse_request(b"GET / HTTP/1.1\r\n" + fields + b"\r\n", step)
    assert request is not None
    assert len(request.headers) == MAX_HEADERS
    fields += b"X-Last: v\r\n"
    with pytest.raises(HeadersTooLarge) as info:
        parse_request(b"GET / HTTP/1.1\r\n" + fields + b"\r\n", step)
    assert info.value.status == 431


def test_custom_limits() -> None:
    parser = RequestParser(max_line=20, max_headers=2, max_header_bytes=30)
    with pytest.raises(InvalidRequest):
        parser.feed(b"GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n")
    parser = RequestParser(max_line=20, max_headers=2, max_header_bytes=30)
    with pytest.raises(HeadersTooLarge):
        parser.feed(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
    parser = RequestParser(max_line=20, max_headers=2, max_header_bytes=30)
    with pytest.raises(HeadersTooLarge):
        parser.feed(b"GET / HTTP/1.1\r\nA: " + b"1" * 30 + b"\r\n\r\n")


# ---------------------------------------------------------------------------------------------
# check_request
# ---------------------------------------------------------------------------------------------


def checked(data: bytes) -> str:
    request, _ = parse_request(data)
    assert request is not None
    return check_request(request)


def test_check_request_valid() -> None:
    assert checked(request_bytes()) == RFC_KEY


@pytest.mark.parametrize(
    ("kwargs", "exc_type", "status"),
    [
        ({"method": "POST"}, InvalidRequest, 405),
        ({"drop": ["Host"]}, InvalidRequest, 400),
        ({"extra": [("Host", "other")]}, InvalidRequest, 400),
        ({"replace": {"Host": "a b"}}, InvalidRequest, 400),
        ({"drop": ["Upgrade"]}, InvalidUpgrade, 426),
        ({"replace": {"Upgrade": "h2c"}}, InvalidUpgrade, 400),
        ({"drop": ["Connection"]}, InvalidUpgrade, 400),
        ({"replace": {"Connection": "keep-alive"}}, InvalidUpgrade, 400),
        ({"drop": ["Sec-WebSocket-Key"]}, InvalidUpgrade, 400),
        ({"replace": {"Sec-WebSocket-Key": "not base64!!"}}, InvalidUpgrade, 400),
        ({"extra": [("Sec-WebSocket-Key", RFC_KEY)]}, InvalidRequest, 400),
        ({"replace": {"Sec-WebSocket-Version": "8"}}, UnsupportedVersion, 426),
        ({"drop": ["Sec-WebSocket-Version"]}, UnsupportedVersion, 426),
        ({"extra": [("Sec-WebSocket-Version", "13")]}, UnsupportedVersion, 426),
        ({"extra": [("Transfer-Encoding", "chunked")]}, InvalidRequest, 400),
        ({"extra": [("Content-Length", "5")]}, InvalidRequest, 400),
        ({"extra": [("Content-Length", "0"), ("Content-Length", "0")]}, InvalidRequest, 400),
        ({"extra": [("Origin", "a"), ("Origin", "b")]}, InvalidRequest, 400),
    ],
)
def test_check_request_errors(kwargs: dict, exc_type: type[InvalidHandshake], status: int) -> None:
    with pytest.raises(exc_type) as info:
        checked(request_bytes(**kwargs))
    assert info.value.status == status


@pytest.mark.parametrize(
    "kwargs",
    [
        {"replace": {"Connection": "keep-alive, Upgrade"}},
        {"replace": {"Connection": "UPGRADE"}},
        {"replace": {"Upgrade": "WebSocket"}},
        {"replace": {"Upgrade": "h2c, websocket"}},
        {"extra": [("Content-Length", "0")]},
        {"replace": {"Sec-WebSocket-Version": " 13 "}},
    ],
)
def test_check_request_accepts(kwargs: dict) -> None:
    assert checked(request_bytes(**kwargs)) == RFC_KEY


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


def test_build_accept_response() -> None:
    response = build_accept_response(RFC_KEY, subprotocol="chat", extra_headers={"X-A": "1"})
    assert response.status == 101
    parsed = read_response(response.serialize())
    assert parsed.status == 101
    assert parsed.reason == "Switching Protocols"
    assert parsed.get("Upgrade") == "websocket"
    assert parsed.get("Connection") == "Upgrade"
    assert parsed.get("Sec-WebSocket-Accept") == RFC_ACCEPT
    assert parsed.get("Sec-WebSocket-Protocol") == "chat"
    assert parsed.get("X-A") == "1"
    assert parsed.get("Content-Length") is None
    assert parsed.rest == b""


def test_error_response() -> None:
    response = error_response(400, "bad\n", [("X-Why", "because")])
    parsed = read_response(response.serialize())
    assert parsed.status == 400
    assert parsed.reason == "Bad Request"
    assert parsed.get("Content-Type") == "text/plain; charset=utf-8"
    assert parsed.get("Connection") == "close"
    assert parsed.get("X-Why") == "because"
    assert parsed.body == b"bad\n"
    assert parsed.rest == b""


def test_response_serialize_keeps_explicit_content_length() -> None:
    response = Response(200, Headers([("Content-Length", "3")]), b"abc")
    assert read_response(response.serialize()).get_all("Content-Length") == ["3"]
    assert Response(599).reason == ""
    assert Response(404, {"A": "b"}).headers["a"] == "b"


def test_response_str_body_is_utf8_text_plain() -> None:
    response = Response(401, body="missing token: é")
    assert response.body == "missing token: é".encode()
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    parsed = read_response(response.serialize())
    assert parsed.status == 401
    assert parsed.body == "missing token: é".encode()
    # A Content-Type given is kept.
    html = Response(200, {"Content-Type": "text/html; charset=utf-8"}, "<p>hi</p>")
    assert html.headers.get_all("Content-Type") == ["text/html; charset=utf-8"]


@pytest.mark.parametrize(
    "headers",
    [
        {"WWW-Authenticate": "Bearer", "X-A": "1"},
        [("WWW-Authenticate", "Bearer"), ("X-A", "1")],
        (("WWW-Authenticate", "Bearer"), ("X-A", "1")),
        Headers([("WWW-Authenticate", "Bearer"), ("X-A", "1")]),
    ],
    ids=["dict", "list", "tuple", "Headers"],
)
def test_response_headers_in_every_common_shape(headers: object) -> None:
    response = Response(401, headers, b"")  # type: ignore[arg-type]
    assert response.headers.items() == [("WWW-Authenticate", "Bearer"), ("X-A", "1")]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"status": "404"}, TypeError, "status must be an int"),
        ({"status": 404.0}, TypeError, "status must be an int"),
        ({"status": True}, TypeError, "status must be an int"),
        ({"status": 42}, ValueError, "from 100 to 599"),
        ({"status": 600}, ValueError, "from 100 to 599"),
        ({"status": 200, "body": {"a": 1}}, TypeError, "body must be bytes or str"),
        ({"status": 200, "body": 3}, TypeError, "body must be bytes or str"),
        ({"status": 200, "headers": "X-A: 1"}, TypeError, "headers must be a dict"),
        ({"status": 200, "headers": {"X-A": 1}}, TypeError, "must be str"),
        ({"status": 200, "headers": [("X-A",)]}, TypeError, "pairs"),
        ({"status": 200, "headers": {"X A": "1"}}, ValueError, "invalid header name"),
        ({"status": 200, "headers": {"X-A": "1\r\nSet-Cookie: x"}}, ValueError, "invalid value"),
        ({"status": 200, "headers": {"X-A": "€"}}, ValueError, "invalid value"),
        ({"status": 200, "reason": 3}, TypeError, "reason must be a str"),
        ({"status": 200, "reason": "OK\r\nX: y"}, ValueError, "line breaks"),
    ],
)
def test_response_arguments_are_checked_when_it_is_built(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Response(**kwargs)  # type: ignore[arg-type]


def test_response_parser_reports_an_out_of_range_status_as_invalid_response() -> None:
    with pytest.raises(InvalidResponse):
        ResponseParser().feed(b"HTTP/1.1 999 Nope\r\n\r\n")


def test_request_params_are_the_parsed_query() -> None:
    parser = RequestParser()
    request = parser.feed(
        b"GET /notify?token=a%2Fb&room=one&room=two+three&flag&name=%C3%A9 HTTP/1.1\r\n"
        b"Host: example.com\r\n\r\n"
    )
    assert request is not None
    assert request.query == "token=a%2Fb&room=one&room=two+three&flag&name=%C3%A9"
    assert request.params == {
        "token": ["a/b"],
        "room": ["one", "two three"],
        "flag": [""],
        "name": ["é"],
    }
    assert request.param("room") == "one"
    assert request.param("missing") is None
    assert request.param("missing", "default") == "default"
    assert Request("GET", "/", Headers()).params == {}


def parse_response(data: bytes, step: int | None = None) -> tuple[Response | None, ResponseParser]:
    parser = ResponseParser()
    return feed_in_steps(parser, data, step), parser


@pytest.mark.parametrize("step", [None, 1, 5])
def test_response_parser_101(step: int | None) -> None:
    data = build_accept_response(RFC_KEY).serialize()
    response, parser = parse_response(data + b"\x81\x00", step)
    assert response is not None
    assert response.status == 101
    assert response.reason == "Switching Protocols"
    assert check_response(response, RFC_KEY) is None
    if step is None:
        assert parser.rest == b"\x81\x00"


@pytest.mark.parametrize("step", [None, 1])
def test_response_parser_reads_body(step: int | None) -> None:
    data = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!"
    response, _ = parse_response(data, step)
    assert response is not None
    assert (response.status, response.reason, response.body) == (403, "Forbidden", b"nope!")


def test_response_parser_http10_answer() -> None:
    # An old server's (or a proxy's) answer is read, so that the client can say what answered;
    # only a 101 must be HTTP/1.1 (test_response_parser_invalid).
    response, _ = parse_response(b"HTTP/1.0 404 Not Found\r\nContent-Length: 4\r\n\r\ngone")
    assert response is not None
    assert (response.status, response.reason, response.body) == (404, "Not Found", b"gone")


def test_response_parser_body_until_eof() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\npartial") is None
    response = parser.feed_eof()
    assert response is not None
    assert (response.status, response.body) == (500, b"partial")
    assert ResponseParser().feed_eof() is None


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.0 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 1010 Nope\r\n\r\n",
        b"HTTP/1.1 abc Nope\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 101 OK\r\nBad Name: x\r\n\r\n",
    ],
)
def test_response_parser_invalid(data: bytes) -> None:
    with pytest.raises(InvalidResponse):
        parse_response(data)


@pytest.mark.parametrize("step", [None, 1000])
@pytest.mark.parametrize(
    ("extra", "wording"),
    [
        (b"X-Big: " + b"a" * 9000 + b"\r\n", "response headers too large"),
        (b"".join(b"X-%d: 1\r\n" % n for n in range(200)), "too many headers"),
    ],
    ids=["bytes", "count"],
)
def test_response_parser_limits_are_response_errors(
    extra: bytes, wording: str, step: int | None
) -> None:
    # The server's fault, reported as an invalid response: not the 431 a server answers a
    # request with (HeadersTooLarge, "request headers too large").
    data = b"HTTP/1.1 101 Switching Protocols\r\n" + extra + b"\r\n"
    with pytest.raises(InvalidResponse) as excinfo:
        parse_response(data, step)
    assert not isinstance(excinfo.value, HeadersTooLarge)
    assert wording in str(excinfo.value)
    assert "request" not in str(excinfo.value)


def test_response_parser_long_status_line() -> None:
    with pytest.raises(InvalidResponse, match="status line too long"):
        parse_response(b"HTTP/1.1 200 " + b"x" * 9000 + b"\r\n\r\n", 1000)


def test_request_parser_limits_stay_431() -> None:
    parser = RequestParser()
    with pytest.raises(HeadersTooLarge, match="request headers too large") as excinfo:
        parser.feed(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
    assert excinfo.value.status == 431


def _response_101(**replace: str | None) -> Response:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": RFC_ACCEPT,
    }
    headers.update(replace)  # type: ignore[arg-type]
    return Response(101, Headers((k, v) for k, v in headers.items() if v is not None))


def test_check_response() -> None:
    assert check_response(_response_101(), RFC_KEY) is None
    assert check_response(_response_101(Connection="keep-alive, upgrade"), RFC_KEY) is None
    assert (
        check_response(_response_101(**{"Sec-WebSocket-Protocol": "b"}), RFC_KEY, ["a", "b"]) == "b"
    )


@pytest.mark.parametrize(
    ("replace", "offered"),
    [
        ({"Upgrade": None}, []),
        ({"Upgrade": "h2c"}, []),
        ({"Connection": None}, []),
        ({"Connection": "close"}, []),
        ({"Sec-WebSocket-Accept": None}, []),
        ({"Sec-WebSocket-Accept": accept_key("AAAAAAAAAAAAAAAAAAAAAA==")}, []),
        ({"Sec-WebSocket-Protocol": "c"}, ["a", "b"]),
        ({"Sec-WebSocket-Protocol": "a"}, []),
        ({"Sec-WebSocket-Protocol": "a, b"}, ["a", "b"]),
    ],
)
def test_check_response_errors(replace: dict[str, str | None], offered: list[str]) -> None:
    with pytest.raises(InvalidResponse):
        check_response(_response_101(**replace), RFC_KEY, offered)


def test_build_request() -> None:
    request = build_request(
        "wss://example.com/path?q=1",
        RFC_KEY,
        origin="https://example.com",
        subprotocols=["chat", "superchat"],
        extensions="permessage-deflate",
        extra_headers=[("User-Agent", "test")],
    )
    assert request.method == "GET"
    assert request.target == "/path?q=1"
    h = request.headers
    assert h["Host"] == "example.com"
    assert h["Upgrade"] == "websocket"
    assert h["Connection"] == "Upgrade"
    assert h["Sec-WebSocket-Key"] == RFC_KEY
    assert h["Sec-WebSocket-Version"] == "13"
    assert h["Origin"] == "https://example.com"
    assert h["Sec-WebSocket-Protocol"] == "chat, superchat"
    assert h["Sec-WebSocket-Extensions"] == "permessage-deflate"
    assert h["User-Agent"] == "test"
    assert check_request(request) == RFC_KEY


@pytest.mark.parametrize(
    ("uri", "host", "target"),
    [
        ("ws://example.com", "example.com", "/"),
        ("ws://example.com:80/", "example.com", "/"),
        ("ws://example.com:443/", "example.com:443", "/"),
        ("wss://example.com:443/", "example.com", "/"),
        ("wss://example.com:80/", "example.com:80", "/"),
        ("ws://[::1]:8080/x", "[::1]:8080", "/x"),
        ("ws://[::1]/x", "[::1]", "/x"),
        ("ws://127.0.0.1:9000/?a=b", "127.0.0.1:9000", "/?a=b"),
    ],
)
def test_build_request_host_and_target(uri: str, host: str, target: str) -> None:
    request = build_request(uri, RFC_KEY)
    assert request.headers["Host"] == host
    assert request.target == target


# ---------------------------------------------------------------------------------------------
# The fast path of the handshake: its results are those of the plain definitions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subprotocol", [None, "chat", "v2.chat"])
@pytest.mark.parametrize("extensions", [None, "", "permessage-deflate; client_max_window_bits"])
def test_accept_response_template_is_the_plain_serialization(
    subprotocol: str | None, extensions: str | None
) -> None:
    response = build_accept_response(RFC_KEY, subprotocol=subprotocol, extensions=extensions)
    plain = Response._unchecked(101, Headers(response.headers.items()), b"", response.reason)
    assert response.serialize() == plain.serialize()
    # Once only (an idle connection keeps its response): the plain way gives the same again.
    assert response._head is None
    assert response.serialize() == plain.serialize()


def test_accept_response_changed_before_sending_is_sent_as_changed() -> None:
    """The response of accept() may be changed before it is sent: the template then goes."""
    response = build_accept_response(RFC_KEY)
    response.headers.add("X-Added", "1")
    parsed = read_response(response.serialize())
    assert parsed.get("X-Added") == "1"
    assert parsed.get("Sec-WebSocket-Accept") == RFC_ACCEPT
    response = build_accept_response(RFC_KEY)
    response.headers = Headers([("Upgrade", "websocket")])
    assert b"Sec-WebSocket-Accept" not in response.serialize()
    response = build_accept_response(RFC_KEY)
    response.reason = "Upgrading"
    assert response.serialize().startswith(b"HTTP/1.1 101 Upgrading\r\n")
    response = build_accept_response(RFC_KEY)
    response.body = b"!"
    assert response.serialize().endswith(b"\r\n\r\n!")


def test_key_check_is_base64_of_16_bytes() -> None:
    """check_request's key pattern accepts exactly the keys that base64-decode (strictly) to
    16 bytes: compared on valid keys and their mutations (a fixed seed: reproducible)."""
    rng = random.Random(6455)

    def by_definition(key: str) -> bool:
        try:
            return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
        except (ValueError, UnicodeEncodeError):
            return False

    valid = 0
    for _ in range(5000):
        key = list(base64.b64encode(rng.randbytes(rng.choice([15, 16, 16, 17]))).decode())
        for _ in range(rng.randint(0, 2)):
            i = rng.randrange(len(key) + 1)
            char = rng.choice("Az9+/=-_ \t.\xe9")
            if rng.random() < 0.4:
                key.insert(i, char)
            elif i < len(key):
                key[i] = char
        text = "".join(key)
        data = request_bytes(replace={"Sec-WebSocket-Key": text})
        try:
            checked(data)
            accepted = True
        except InvalidUpgrade:
            accepted = False
        except InvalidRequest:  # a value that is no header value (a tab at an edge is cut)
            continue
        assert accepted == by_definition(text.strip(" \t")), text
        valid += accepted
    assert valid > 1000
