"""draft-hixie-thewebsocketprotocol-76, sans-I/O: the draft's own example handshake, framing,
limits and clean errors; the framing object installed after a draft-76 101 (and only then); and
the RFC 6455 path of the same class left untouched."""

from __future__ import annotations

import pytest

from shakehands.protocol.connection import Close, State
from shakehands.protocol.errors import (
    ConnectionClosedOK,
    InvalidPayload,
    InvalidState,
    InvalidUpgrade,
    PayloadTooBig,
    ProtocolError,
)
from shakehands.protocol.frames import Opcode, serialize_frame
from shakehands.protocol.handshake import Request, Response, accept_key
from shakehands.protocol.hixie76 import (
    Hixie76Framing,
    Hixie76ServerProtocol,
    challenge_response,
    is_hixie76_request,
    key_number,
)
from shakehands.protocol.server import ServerProtocol

KEY1 = "4 @1  46546xW%0l 1 5"
KEY2 = "12998 5 Y3 1  .P00"
KEY3 = b"^n:ds[4U"
ANSWER = b"8jKS'y:G*Co,Wxa-"

# The draft's example request (§1.3 / §5.1), header order and all.
EXAMPLE_HEAD = (
    "GET /demo HTTP/1.1\r\n"
    "Host: example.com\r\n"
    "Connection: Upgrade\r\n"
    f"Sec-WebSocket-Key2: {KEY2}\r\n"
    "Sec-WebSocket-Protocol: sample\r\n"
    "Upgrade: WebSocket\r\n"
    f"Sec-WebSocket-Key1: {KEY1}\r\n"
    "Origin: http://example.com\r\n"
    "\r\n"
).encode()
EXAMPLE = EXAMPLE_HEAD + KEY3


def head_with(**replace: str | None) -> bytes:
    """The example head with some headers replaced (None removes one)."""
    lines = EXAMPLE_HEAD.decode().split("\r\n")[:-2]
    out = [lines[0]]
    names = {name.lower().replace("_", "-"): value for name, value in replace.items()}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        if name.lower() in names:
            if names[name.lower()] is not None:
                out.append(f"{name}: {names[name.lower()]}")
        else:
            out.append(line)
    return ("\r\n".join(out) + "\r\n\r\n").encode()


def opened(**options: object) -> Hixie76ServerProtocol:
    p = Hixie76ServerProtocol(subprotocols=["sample"], **options)  # type: ignore[arg-type]
    p.receive_data(EXAMPLE)
    (request,) = p.events_received()
    assert isinstance(request, Request)
    p.send_response(p.accept())
    assert p.state is State.OPEN
    p.data_to_send()
    return p


def test_key_numbers_of_the_draft_example() -> None:
    assert key_number(KEY1) == 4146546015 // 5 == 829309203
    assert key_number(KEY2) == 1299853100 // 5 == 259970620


def test_challenge_response_of_the_draft_example() -> None:
    assert challenge_response(KEY1, KEY2, KEY3) == ANSWER


@pytest.mark.parametrize(
    "key",
    [
        "12345",  # no spaces
        "a b c",  # no digits
        "1 2 3",  # 123 is not a multiple of 2 spaces
        "99999999999 1",  # more than 32 bits of digits
        "4294967296 ",  # 2**32
    ],
)
def test_bad_keys(key: str) -> None:
    with pytest.raises(InvalidUpgrade):
        key_number(key)


def test_the_draft_example_handshake() -> None:
    p = Hixie76ServerProtocol(subprotocols=["sample"])
    p.receive_data(EXAMPLE)
    (request,) = p.events_received()
    assert isinstance(request, Request) and is_hixie76_request(request)
    response = p.accept()
    assert response.status == 101
    p.send_response(response)
    wire = b"".join(p.data_to_send())
    head, _, body = wire.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 101 WebSocket Protocol Handshake"
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields == {
        "Upgrade": "WebSocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Origin": "http://example.com",
        "Sec-WebSocket-Location": "ws://example.com/demo",
        "Sec-WebSocket-Protocol": "sample",
    }
    assert body == ANSWER
    assert p.state is State.OPEN and p.hixie76 and p.subprotocol == "sample"


def test_secure_location_and_no_subprotocol() -> None:
    p = Hixie76ServerProtocol(secure=True)
    p.receive_data(EXAMPLE)
    p.send_response(p.accept())
    wire = b"".join(p.data_to_send())
    assert b"Sec-WebSocket-Location: wss://example.com/demo\r\n" in wire
    assert b"Sec-WebSocket-Protocol" not in wire


@pytest.mark.parametrize("chunk", [1, 3, 7, len(EXAMPLE_HEAD)])
def test_the_request_waits_for_key3(chunk: int) -> None:
    p = Hixie76ServerProtocol()
    events = []
    for i in range(0, len(EXAMPLE), chunk):
        p.receive_data(EXAMPLE[i : i + chunk])
        events += p.events_received()
        if i + chunk < len(EXAMPLE):
            assert events == [] and p.request is None
    assert len(events) == 1 and p.request is events[0]
    p.send_response(p.accept())
    assert b"".join(p.data_to_send()).endswith(ANSWER)


def test_frames_sent_with_the_handshake_are_parsed_after_it() -> None:
    p = Hixie76ServerProtocol()
    p.receive_data(EXAMPLE + b"\x00early\xff\x00la")
    assert len(p.events_received()) == 1
    p.send_response(p.accept())
    p.receive_data(b"te\xff")
    assert p.events_received() == ["early", "late"]


def test_text_frames_in_any_chunks() -> None:
    p = opened()
    data = b"\x00Hello\xff\x00" + "滴水之恩 🐱".encode() + b"\xff\x00\xff"
    for i in range(len(data)):
        p.receive_data(data[i : i + 1])
    assert p.events_received() == ["Hello", "滴水之恩 🐱", ""]


def test_sending_text_and_what_cannot_be_sent() -> None:
    p = opened()
    p.send_text("滴水之恩当以涌泉相报")
    assert p.data_to_send() == [b"\x00" + "滴水之恩当以涌泉相报".encode() + b"\xff"]
    with pytest.raises(InvalidState):
        p.send_binary(b"\x00")
    with pytest.raises(InvalidState):
        p.send_ping(b"")
    with pytest.raises(InvalidState):
        p.send_fragment("part", fin=False)
    assert p.data_to_send() == []
    assert p.state is State.OPEN
    # A refusal changes nothing: whole text messages still go.
    p.send_text("still")
    assert p.data_to_send() == [b"\x00still\xff"]


def test_client_closes() -> None:
    p = opened()
    p.receive_data(b"\x00bye\xff\xff\x00")
    assert p.events_received() == ["bye", Close(1005, "")]
    assert p.data_to_send() == [b"\xff\x00"]
    assert p.state is State.CLOSED and p.close_expected()
    assert isinstance(p.close_exception(), ConnectionClosedOK)


def test_server_closes() -> None:
    p = opened()
    p.send_close(1000, "done")
    assert p.data_to_send() == [b"\xff\x00"]
    assert p.state is State.CLOSING
    p.receive_data(b"\xff\x00")
    assert p.state is State.CLOSED and p.close_expected()


def test_message_too_big_fails_before_it_is_buffered() -> None:
    p = opened(max_message_size=10)
    p.receive_data(b"\x00" + b"x" * 10 + b"\xff")
    assert p.events_received() == ["x" * 10]
    # No sentinel yet, but already more than the limit: fail now, do not buffer on.
    p.receive_data(b"\x00" + b"y" * 11)
    assert isinstance(p.failure, PayloadTooBig)
    assert p.data_to_send() == [b"\xff\x00"]
    assert p.state is State.CLOSED
    p.receive_data(b"y" * 100_000)
    assert p.events_received() == []


def test_max_frame_size_counts_too() -> None:
    p = opened(max_frame_size=4)
    p.receive_data(b"\x0012345\xff")
    assert isinstance(p.failure, PayloadTooBig)


def test_invalid_utf8_fails() -> None:
    p = opened()
    p.receive_data(b"\x00\xc3\x28\xff")
    assert isinstance(p.failure, InvalidPayload)
    assert p.data_to_send() == [b"\xff\x00"]


@pytest.mark.parametrize("data", [b"\x01abc\xff", b"\x80\x03abc", b"\xff\x05"])
def test_unsupported_frame_types_fail(data: bytes) -> None:
    p = opened()
    p.receive_data(data)
    assert isinstance(p.failure, ProtocolError)
    assert p.data_to_send() == [b"\xff\x00"]
    assert p.state is State.CLOSED


@pytest.mark.parametrize(
    ("head", "status", "reason"),
    [
        (head_with(sec_websocket_key1="12345"), 400, "draft-76 key"),
        (head_with(sec_websocket_key2="1 2 3"), 400, "multiple"),
        (head_with(origin=None), 400, "Origin"),
        (head_with(upgrade="websocket2"), 400, "Upgrade"),
        (head_with(connection="keep-alive"), 400, "Connection"),
        (head_with(host=None), 400, "Host"),
    ],
)
def test_bad_handshakes_get_a_clean_answer(head: bytes, status: int, reason: str) -> None:
    p = Hixie76ServerProtocol()
    p.receive_data(head + KEY3)
    p.events_received()
    response = p.accept()
    assert response.status == status
    assert reason in response.body.decode()
    p.send_response(response)
    assert p.state is State.CLOSED and p.close_expected()
    assert p.handshake_exc is not None and reason in p.handshake_exc.reason


def test_origin_not_allowed_gets_403() -> None:
    p = Hixie76ServerProtocol(origins=["https://ok.example"])
    p.receive_data(EXAMPLE)
    assert p.accept().status == 403


def test_head_limits_still_apply() -> None:
    p = Hixie76ServerProtocol(max_header_bytes=100)
    p.receive_data(EXAMPLE)
    wire = b"".join(p.data_to_send())
    assert wire.startswith(b"HTTP/1.1 431 ")
    assert p.state is State.CLOSED


def test_without_the_option_a_draft76_request_gets_426() -> None:
    p = ServerProtocol()
    p.receive_data(EXAMPLE)
    p.events_received()
    response = p.accept()
    assert response.status == 426
    assert response.headers["Sec-WebSocket-Version"] == "13"


KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC6455_REQUEST = (
    "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
    f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()


def test_rfc6455_requests_are_unchanged() -> None:
    p = Hixie76ServerProtocol()
    p.receive_data(RFC6455_REQUEST)
    assert len(p.events_received()) == 1
    p.send_response(p.accept())
    wire = b"".join(p.data_to_send())
    assert f"Sec-WebSocket-Accept: {accept_key(KEY)}".encode() in wire
    assert not p.hixie76
    p.send_text("hi")
    assert p.data_to_send() == [b"\x81\x02hi"]
    p.receive_data(b"\x81\x82\x00\x00\x00\x00ok")
    assert p.events_received() == ["ok"]


# -------------------------------------------------------------------------------------------------
# The framing object: installed after a draft-76 101, and only then
# -------------------------------------------------------------------------------------------------


def masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    return serialize_frame(opcode, payload, fin=fin, mask=True, mask_key=b"\x01\x02\x03\x04")


def test_an_rfc6455_connection_has_no_framing_installed() -> None:
    p = Hixie76ServerProtocol()
    p.receive_data(RFC6455_REQUEST)
    p.send_response(p.accept())
    assert p._framing is None and not p.hixie76 and p.can_ping
    # Nothing shadows the RFC 6455 code, in the class or in the instance.
    assert not set(Hixie76Framing.SEAMS) & vars(p).keys()
    for name in (*Hixie76Framing.SEAMS, "receive_data"):
        assert getattr(Hixie76ServerProtocol, name) is getattr(ServerProtocol, name)


def test_an_rfc6455_connection_behaves_as_serverprotocol() -> None:
    """The same bytes in and the same calls give the same events and bytes out."""
    incoming = [
        RFC6455_REQUEST,
        masked(Opcode.TEXT, "滴水".encode()) + masked(Opcode.BINARY, b"\x00\xff"),
        masked(Opcode.TEXT, b"frag", fin=False),
        masked(Opcode.PING, b"p") + masked(Opcode.CONT, b"ment"),
        masked(Opcode.BINARY, b"x" * 70_000)[:1000],
        masked(Opcode.BINARY, b"x" * 70_000)[1000:],
        masked(Opcode.CLOSE, b"\x03\xe8bye"),
    ]
    results = []
    for cls in (ServerProtocol, Hixie76ServerProtocol):
        p = cls()
        trace: list[object] = []
        for i, data in enumerate(incoming):
            p.receive_data(data)
            trace += p.events_received()
            if i == 0:
                p.send_response(p.accept())
            elif i == 1:
                p.send_text("hi")
                p.send_text("y" * 70_000)
                p.send_binary(b"\x00")
                p.send_message(b"z" * 70_000)
                p.send_ping(b"k")
                p.send_fragment("a", fin=False)
                p.send_fragment("b", fin=True)
            trace += p.data_to_send()
        trace += [p.state, p.close_code, p.can_ping]
        results.append(trace)
    assert results[0] == results[1]
    assert results[0][-3:] == [State.CLOSED, 1000, True]


def test_a_draft76_connection_has_its_framing_installed() -> None:
    p = opened()
    framing = p._framing
    assert isinstance(framing, Hixie76Framing)
    assert p.hixie76 and not p.can_ping
    for name in Hixie76Framing.SEAMS:
        bound = vars(p)[name]
        assert bound.__self__ is framing
    # Only those: the state machine and the rest are the connection's own.
    methods = {name for name, value in vars(p).items() if callable(value)}
    assert methods == set(Hixie76Framing.SEAMS)


def test_hixie76_is_read_only() -> None:
    p = opened()
    with pytest.raises(AttributeError):
        p.hixie76 = False  # type: ignore[misc]


def test_a_draft76_request_answered_otherwise_installs_nothing() -> None:
    p = Hixie76ServerProtocol()
    p.receive_data(EXAMPLE + b"\x00early\xff")
    p.events_received()
    assert p.accept().status == 101
    assert p.hixie76  # accepted, not sent yet
    p.send_response(Response(403, body=b"no\n"))
    assert not p.hixie76 and p._framing is None and p.can_ping
    assert not set(Hixie76Framing.SEAMS) & vars(p).keys()
    assert p.state is State.CLOSED and p.events_received() == []


def test_framing_parses_split_frames_without_rescanning() -> None:
    p = opened()
    framing = p._framing
    assert framing is not None
    assert framing.parse(memoryview(b"\x00abc")) == 0
    assert framing._scanned == 3 and p.events_received() == []
    # The connection keeps the unconsumed bytes and hands them back with the next read.
    assert framing.parse(memoryview(b"\x00abcd\xff\x00ef\xff\xff")) == 10
    assert framing._scanned == 0
    assert p.events_received() == ["abcd", "ef"]
    assert framing.parse(memoryview(b"\xff\x00")) == 2
    assert p.events_received() == [Close(1005, "")]


@pytest.mark.parametrize(
    ("options", "data"),
    [
        ({"max_message_size": 3}, b"\x00abcd\xff"),  # whole, too big
        ({"max_message_size": 3}, b"\x00abcd"),  # not all here, too big already
        ({"max_frame_size": 3, "max_message_size": None}, b"\x00abcd"),
    ],
)
def test_framing_enforces_limits(options: dict[str, int | None], data: bytes) -> None:
    p = opened(**options)
    framing = p._framing
    assert framing is not None
    with pytest.raises(PayloadTooBig, match="limit of 3 bytes"):
        framing.parse(memoryview(data))


def test_framing_without_limits() -> None:
    p = opened(max_message_size=None)
    p.receive_data(b"\x00" + b"x" * 100_000 + b"\xff")
    assert p.events_received() == ["x" * 100_000]


@pytest.mark.parametrize(
    ("opcode", "fin", "name"),
    [
        (Opcode.BINARY, True, "binary"),
        (Opcode.PING, True, "ping"),
        (Opcode.PONG, True, "pong"),
        (Opcode.TEXT, False, "text"),
        (Opcode.CONT, True, "cont"),
        (3, True, "3"),
    ],
)
def test_framing_writes_text_and_close_only(opcode: int, fin: bool, name: str) -> None:
    p = opened()
    framing = p._framing
    assert framing is not None
    with pytest.raises(InvalidState, match=f"whole text messages only, not {name}$"):
        framing.frame(opcode, b"x", fin)
    framing.frame(Opcode.TEXT, b"ok")
    framing.frame(Opcode.CLOSE, b"\x03\xe8ignored")
    assert p.data_to_send() == [b"\x00ok\xff", b"\xff\x00"]


def test_a_draft76_connection_refuses_binary_and_pings_through_any_api() -> None:
    p = opened()
    for send in (
        lambda: p.send_binary(b"x"),
        lambda: p.send_message(b"x"),
        lambda: p.send_ping(),
        lambda: p.send_pong(),
    ):
        with pytest.raises(InvalidState):
            send()
    p.send_message("still open")
    assert p.data_to_send() == [b"\x00still open\xff"]
    assert p.state is State.OPEN


def test_draft_76_frames_are_never_taken_by_a_compiled_reader() -> None:
    assert opened().frames_takeable() is None
