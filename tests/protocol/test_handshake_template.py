"""The handshake's shortcuts give what the plain definitions give (issue 13/14, hs15).

- The 101 made from a template (``build_accept_response``: its bytes and its headers already
  compacted) is byte for byte the response ``Response.serialize`` writes field by field for the
  same headers, over requests with and without subprotocols, extensions and extra headers, and
  with headers appended afterwards (``Response._extend_head``, as the uvicorn front end adds
  its default and the application's headers).
- A read that is exactly one close frame (``FrameReader._receive_close_frame``) ends as the
  general frame loop ends: the same events, close frames, failures and states.
"""

from __future__ import annotations

import pytest

from shakehands.protocol import http11
from shakehands.protocol.config import server_config
from shakehands.protocol.connection import Connection, State
from shakehands.protocol.frames import serialize_frame
from shakehands.protocol.handshake import Headers, Response, build_accept_response
from shakehands.protocol.server import ServerProtocol

from .helpers import RFC_KEY, read_response, request_bytes


@pytest.fixture(autouse=True, params=["compiled", "python"])
def head_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both request-head parsers (the C one skipped when not built or disabled)."""
    if request.param == "python":
        monkeypatch.setattr(http11, "_parse_request_head", None)
    elif http11._parse_request_head is None:
        pytest.skip("the C request-head parser is not in use")
    return str(request.param)


def plain(response: Response) -> bytes:
    """What ``Response.serialize`` writes for the response's status, reason and headers field
    by field (no template)."""
    copy = Response._unchecked(
        response.status, Headers(response.headers.items()), response.body, response.reason
    )
    return copy.serialize()


DEFLATE = "permessage-deflate; client_max_window_bits"
REQUESTS = [
    # (the request's extra headers, the server's subprotocols, compression)
    ((), (), None),
    ((), (), "deflate"),
    ((("Sec-WebSocket-Protocol", "chat"),), ("chat",), None),
    ((("Sec-WebSocket-Protocol", "v1, chat, v2.chat"),), ("v2.chat", "chat"), None),
    ((("Sec-WebSocket-Protocol", "other"),), ("chat",), None),
    ((("Sec-WebSocket-Extensions", DEFLATE),), (), "deflate"),
    ((("Sec-WebSocket-Extensions", DEFLATE),), (), None),
    (
        (
            ("Sec-WebSocket-Extensions", "permessage-deflate; server_no_context_takeover"),
            ("Sec-WebSocket-Protocol", "chat"),
            ("Origin", "http://127.0.0.1"),
            ("Cookie", "a=b: c"),
        ),
        ("chat",),
        "deflate",
    ),
    ((("Sec-WebSocket-Extensions", "x-unknown, " + DEFLATE),), ("chat",), "deflate"),
]
EXTRA = [None, [("X-Extra", "1")], [("Set-Cookie", "a=b"), ("Set-Cookie", "c=d: e")]]


@pytest.mark.parametrize(("offered", "subprotocols", "compression"), REQUESTS)
@pytest.mark.parametrize("extra_headers", EXTRA)
def test_template_101_is_the_plain_serialization(
    offered: tuple[tuple[str, str], ...],
    subprotocols: tuple[str, ...],
    compression: str | None,
    extra_headers: list[tuple[str, str]] | None,
) -> None:
    config = server_config(subprotocols=list(subprotocols), compression=compression)
    server = ServerProtocol(config)
    server.receive_data(request_bytes(extra=offered))
    [request] = server.events_received()
    response = server.accept(request, extra_headers=extra_headers)
    assert response.status == 101
    if extra_headers is None:
        # The usual 101: compacted from the start (nothing for send_response to compact).
        assert isinstance(response.headers._items, str)
        assert response._kept_head() is not None
    server.send_response(response)  # serialised from the template (headers not read before)
    wire = b"".join(server.data_to_send())
    assert wire == plain(response)
    assert server.state is State.OPEN
    # The headers read back as sent, whether compacted or not.
    parsed = read_response(wire)
    assert [(n.lower(), v) for n, v in parsed.headers] == [
        (n.lower(), v) for n, v in response.headers.items()
    ]
    assert response.headers["Sec-WebSocket-Accept"] == parsed.get("Sec-WebSocket-Accept")


@pytest.mark.parametrize("subprotocol", [None, "", "chat"])
@pytest.mark.parametrize("extensions", [None, DEFLATE])
@pytest.mark.parametrize(
    "appended",
    [
        [],
        [("server", "uvicorn"), ("date", "Wed, 02 Dec 2026 15:00:00 GMT")],
        [("server", "uvicorn"), ("X-App", "1"), ("Sec-WebSocket-Protocol", "chat")],
    ],
)
def test_extended_template_is_the_plain_serialization(
    subprotocol: str | None, extensions: str | None, appended: list[tuple[str, str]]
) -> None:
    lines = "".join(f"{name}: {value}\r\n" for name, value in appended).encode("latin-1")
    response = build_accept_response(RFC_KEY, subprotocol=subprotocol, extensions=extensions)
    reference = build_accept_response(RFC_KEY, subprotocol=subprotocol, extensions=extensions)
    for name, value in appended:
        reference.headers.add(name, value)
    assert response._extend_head(appended, lines)
    assert isinstance(response.headers._items, str)
    assert response._kept_head() is not None
    wire = response.serialize()  # from the kept head (reading the headers would unpack them)
    assert wire == plain(reference) == reference.serialize()
    assert response.headers == reference.headers


def test_extend_head_without_a_kept_head_does_nothing() -> None:
    response = build_accept_response(RFC_KEY)
    response.headers.add("X-Changed", "1")  # the template no longer says what is sent
    assert not response._extend_head([("X-More", "2")], b"X-More: 2\r\n")
    assert "X-More" not in response.headers
    assert response.serialize() == plain(response)
    # Compacted again after the change: a new string, so still not the template's.
    response = build_accept_response(RFC_KEY)
    response.headers.add("X-Changed", "1")
    response.headers._compact()
    assert response._kept_head() is None


def test_extended_head_then_changed_is_sent_as_changed() -> None:
    response = build_accept_response(RFC_KEY)
    assert response._extend_head([("server", "x")], b"server: x\r\n")
    response.headers.add("X-Late", "1")
    wire = response.serialize()
    assert wire == plain(response)
    assert b"X-Late: 1\r\n" in wire and b"server: x\r\n" in wire


# ---------------------------------------------------------------------------------------------
# A read that is one close frame
# ---------------------------------------------------------------------------------------------


def masked_close(payload: bytes, *, b0: int = 0x88, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([b0, 0x80 | len(payload)]) + mask + body


CLOSES = [
    masked_close(b"\x03\xe8"),  # 1000
    masked_close(b""),  # no status: 1005, answered without one
    masked_close(b"\x03\xe9bye"),  # 1001 with a reason
    masked_close(b"\x0f\xa0" + "é".encode() * 20),  # 4000, a UTF-8 reason
    masked_close(b"\x0f\xa0" + b"x" * 123),  # the longest
    masked_close(b"\x03"),  # one byte: 1002
    masked_close(b"\x03\xe7"),  # 999: 1002
    masked_close(b"\x03\xedx"),  # 1005 on the wire: 1002
    masked_close(b"\x03\xe8\xff\xfe"),  # reason not UTF-8: 1007
    masked_close(b"\x03\xe8", b0=0xC8),  # RSV1 set: 1002 (general path)
    masked_close(b"\x03\xe8", b0=0x08),  # not FIN: 1002 (general path)
    serialize_frame(0x8, b"\x03\xe8"),  # unmasked from a client: 1002 (general path)
    masked_close(b"\x03\xe8") + masked_close(b"\x03\xe9"),  # two: the second ignored
    masked_close(b"\x03\xe8") + b"\x81",  # bytes after it: dropped
]


def opened(**options: object) -> ServerProtocol:
    server = ServerProtocol(compression=None, **options)  # type: ignore[arg-type]
    server.receive_data(request_bytes())
    server.events_received()
    server.send_response(server.accept())
    server.data_to_send()
    return server


def outcome(server: Connection) -> tuple[object, ...]:
    events = server.events_received()
    out = b"".join(server.data_to_send())
    failure = server.failure
    return (
        events,
        out,
        server.state,
        server.close_rcvd,
        server.close_sent,
        None if failure is None else (type(failure), str(failure)),
        server.close_expected(),
    )


@pytest.mark.parametrize("frame", CLOSES, ids=lambda data: data.hex()[:24])
def test_close_frame_in_one_read_ends_as_the_general_loop(frame: bytes) -> None:
    whole = opened()
    whole.receive_data(frame)
    # The general loop: the same bytes one at a time (never a whole close frame in one read).
    bytewise = opened()
    for i in range(len(frame)):
        bytewise.receive_data(frame[i : i + 1])
    assert outcome(whole) == outcome(bytewise)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_close_frame_in_one_read_of_any_buffer_type(kind: type) -> None:
    server = opened()
    server.receive_data(kind(masked_close(b"\x03\xe8")))
    events, out, state, *_ = outcome(server)
    assert out == b"\x88\x02\x03\xe8"
    assert state is State.CLOSED
    assert server.close_code == 1000


def test_close_frame_inside_a_data_frame_is_payload() -> None:
    """Bytes that look like a close frame while a data frame's payload is being read are
    payload, not a frame."""
    server = opened()
    close = masked_close(b"\x03\xe8")
    mask = b"\x00\x00\x00\x00"
    server.receive_data(bytes([0x82, 0x80 | len(close) * 2]) + mask)  # header only
    server.receive_data(close)
    server.receive_data(close)
    assert server.events_received() == [close * 2]
    assert server.state is State.OPEN


def test_close_frame_between_fragments_answers_and_ends_the_message() -> None:
    whole, bytewise = opened(), opened()
    first = bytes([0x01, 0x83]) + b"\x00\x00\x00\x00" + b"abc"  # text, not FIN
    close = masked_close(b"\x03\xe8")
    for server in (whole, bytewise):
        server.receive_data(first)
    whole.receive_data(close)
    for i in range(len(close)):
        bytewise.receive_data(close[i : i + 1])
    assert outcome(whole) == outcome(bytewise)


def test_close_answer_frames_are_those_of_the_general_send() -> None:
    """The server's cached answers are the frames serialize_frame makes for each code."""
    for code in (1000, 1001, 1011, 3000, 4999):
        server = opened()
        server.receive_data(masked_close(code.to_bytes(2, "big") + b"why"))
        assert b"".join(server.data_to_send()) == serialize_frame(0x8, code.to_bytes(2, "big"))


def test_template_101_bytes() -> None:
    """The bytes themselves, as every release before the template sent them."""
    response = build_accept_response(RFC_KEY, subprotocol="chat", extensions=DEFLATE)
    assert response.serialize() == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: chat\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )


def test_control_check_of_packed_requests_is_the_regex() -> None:
    """pack_request's check for control characters (C passes for ASCII) says what the
    pattern says, for every character up to U+017F, in ASCII and non-ASCII text."""
    from shakehands.protocol.server import _CONTROL, _has_control

    for code in range(0x180):
        for text in (f"GET\n/a{chr(code)}b\tc", f"é{chr(code)}", chr(code)):
            assert _has_control(text) == (_CONTROL.search(text) is not None), (code, text)


@pytest.mark.parametrize(
    "address",
    [("127.0.0.1", 80), ("::1", 8000, 0, 0), "/tmp/sock", None, ("a\tb", 1), ("h", True)],
)
def test_packed_request_addresses(address: object) -> None:
    from shakehands.protocol.server import _pack_address, _unpack_address

    line = _pack_address(address)
    if line is None:
        assert address in (("a\tb", 1), ("h", True))
    else:
        assert _unpack_address(line) == address


@pytest.mark.parametrize("frame", [masked_close(b"\x03\xe8"), b"\x88\x82\x01\x02\x03\x04\x02\xea"])
def test_draft76_reads_are_not_taken_for_close_frames(frame: bytes) -> None:
    """A draft-76 connection parses its own framing: a read that would be a whole RFC 6455
    close frame is the draft's (a length-prefixed frame) and its close stays 0xFF 0x00."""
    from .test_hixie76 import opened as opened76

    whole, bytewise = opened76(), opened76()
    whole.receive_data(frame)
    for i in range(len(frame)):
        bytewise.receive_data(frame[i : i + 1])
    assert outcome(whole) == outcome(bytewise)
    closing = opened76()
    closing.receive_data(b"\xff\x00")
    assert b"".join(closing.data_to_send()) == b"\xff\x00"
