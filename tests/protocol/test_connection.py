"""The Connection state machine (RFC 6455 §5-§7): bytes in, events and bytes out.

A server Connection is fed masked frames, a client Connection unmasked ones. Most tests run with
three ways of feeding the same bytes (whole, one byte at a time, chunks of 3) through the ``feed``
fixture: the engine must give the same answer whichever way the bytes arrive.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import pytest

from shakehands.protocol.connection import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Close,
    Connection,
    Ping,
    Pong,
    Role,
    State,
)
from shakehands.protocol.deflate import PerMessageDeflate
from shakehands.protocol.errors import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidPayload,
    InvalidState,
    PayloadTooBig,
    ProtocolError,
)
from shakehands.protocol.frames import Opcode, parse_close, serialize_close

from .helpers import (
    close_code_of,
    feed_bytewise,
    feed_chunks,
    feed_whole,
    masked,
    sent,
    sent_frames,
    unmasked,
)

Feed = Callable[[Connection, bytes], None]

FEEDERS: dict[str, Feed] = {
    "whole": feed_whole,
    "bytewise": feed_bytewise,
    "chunks3": feed_chunks,
}

RESERVED_OPCODES = [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]


@pytest.fixture(params=list(FEEDERS))
def feed(request: pytest.FixtureRequest) -> Feed:
    return FEEDERS[request.param]


def frame_for(role: Role, opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """A frame that a peer of ``role`` would legitimately send (masked to a server)."""
    if role is Role.SERVER:
        return masked(opcode, payload, fin=fin)
    return unmasked(opcode, payload, fin=fin)


def assert_failed(conn: Connection, code: int, exc_type: type[ProtocolError] = ProtocolError):
    """The connection failed with ``code`` and queued exactly one close frame carrying it."""
    assert conn.failure is not None, "connection did not fail"
    assert isinstance(conn.failure, exc_type)
    assert conn.failure.code == code
    # The close frame is owed, not queued: it leaves at the next data_to_send(), after whatever
    # the application sends in answer to the messages before the violation.
    assert conn.close_pending
    assert conn.state is State.OPEN
    assert not conn.close_expected()
    frames = sent_frames(conn)
    assert not conn.close_pending
    assert conn.state is State.CLOSED
    assert conn.close_expected()
    closes = [f for f in frames if f.opcode == Opcode.CLOSE]
    assert len(closes) == 1, frames
    close = closes[0]
    assert close is frames[-1]
    assert close.fin
    assert close.masked is (conn.role is Role.CLIENT)
    assert close_code_of(close) == code
    # The reason is valid UTF-8 and the payload fits a control frame.
    assert len(close.payload) <= 125
    assert parse_close(close.payload)[0] == code
    assert conn.close_sent is not None and conn.close_sent.code == code
    ex = conn.close_exception()
    assert isinstance(ex, ConnectionClosedError)
    assert ex.sent_code == code
    return close


# ---------------------------------------------------------------------------------------------
# Receiving data
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_text_and_binary_messages(role: Role, feed: Feed) -> None:
    conn = Connection(role)
    assert conn.state is State.OPEN
    data = (
        frame_for(role, Opcode.TEXT, "héllo wörld 😀".encode())
        + frame_for(role, Opcode.BINARY, b"\x00\x01\xff")
        + frame_for(role, Opcode.TEXT, b"")
        + frame_for(role, Opcode.BINARY, b"")
        + frame_for(role, Opcode.BINARY, bytes(range(256)) * 3)
    )
    feed(conn, data)
    assert conn.events_received() == [
        "héllo wörld 😀",
        b"\x00\x01\xff",
        "",
        b"",
        bytes(range(256)) * 3,
    ]
    assert conn.events_received() == []
    assert conn.data_to_send() == []
    assert conn.failure is None
    assert conn.state is State.OPEN
    assert not conn.close_expected()


@pytest.mark.parametrize("role", list(Role))
def test_fragmented_messages(role: Role, feed: Feed) -> None:
    conn = Connection(role)
    data = (
        frame_for(role, Opcode.TEXT, b"", fin=False)
        + frame_for(role, Opcode.CONT, b"Hel", fin=False)
        + frame_for(role, Opcode.CONT, b"", fin=False)
        + frame_for(role, Opcode.CONT, b"lo")
        + frame_for(role, Opcode.BINARY, b"\x01", fin=False)
        + frame_for(role, Opcode.CONT, b"\x02" * 300)
        + frame_for(role, Opcode.TEXT, b"", fin=False)
        + frame_for(role, Opcode.CONT, b"")
    )
    feed(conn, data)
    assert conn.events_received() == ["Hello", b"\x01" + b"\x02" * 300, ""]
    assert conn.failure is None


def test_message_not_delivered_before_last_fragment() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_data(masked(Opcode.BINARY, b"abc", fin=False))
    conn.receive_data(masked(Opcode.CONT, b"def", fin=False))
    assert conn.events_received() == []
    conn.receive_data(masked(Opcode.CONT, b"g"))
    assert conn.events_received() == [b"abcdefg"]


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_bytes_like_input(kind: type) -> None:
    conn = Connection(Role.SERVER)
    data = masked(Opcode.TEXT, b"Hello") + masked(Opcode.BINARY, b"xyz")
    conn.receive_data(kind(data[:5]))
    conn.receive_data(kind(data[5:]))
    events = conn.events_received()
    assert events == ["Hello", b"xyz"]
    assert type(events[1]) is bytes


def test_input_buffer_is_copied() -> None:
    """A caller may reuse its read buffer: the engine must not keep a view on it."""
    conn = Connection(Role.SERVER)
    data = bytearray(masked(Opcode.BINARY, b"0123456789"))
    conn.receive_data(data[:8])
    buf = bytearray(data[8:])
    conn.receive_data(buf)
    buf[:] = b"\x00" * len(buf)
    assert conn.events_received() == [b"0123456789"]


def test_large_masked_message_bytewise_and_chunked() -> None:
    payload = bytes(i * 7 % 256 for i in range(70_000))
    frame = masked(Opcode.BINARY, payload)
    for chunk in (1, 3, 4, 5, 4096):
        conn = Connection(Role.SERVER)
        feed_chunks(conn, frame, chunk)
        assert conn.events_received() == [payload], chunk


def test_empty_receive_data_is_noop() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_data(b"")
    assert conn.events_received() == []
    assert conn.state is State.OPEN


# ---------------------------------------------------------------------------------------------
# Framing errors: 1002
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", RESERVED_OPCODES)
@pytest.mark.parametrize("role", list(Role))
def test_reserved_opcode(role: Role, opcode: int, feed: Feed) -> None:
    conn = Connection(role)
    feed(conn, frame_for(role, opcode, b"abc") + frame_for(role, Opcode.TEXT, b"after"))
    assert conn.events_received() == []
    assert_failed(conn, 1002)


@pytest.mark.parametrize("opcode", RESERVED_OPCODES)
def test_reserved_opcode_fails_on_first_two_bytes(opcode: int) -> None:
    conn = Connection(Role.SERVER)
    conn.receive_data(masked(opcode, b"abc")[:2])
    assert_failed(conn, 1002)


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.CLOSE])
@pytest.mark.parametrize("role", list(Role))
def test_reserved_bits(role: Role, opcode: int, rsv: int, feed: Feed) -> None:
    conn = Connection(role)
    frame = bytearray(frame_for(role, opcode, b"ab"))
    frame[0] |= rsv
    feed(conn, bytes(frame))
    assert conn.events_received() == []
    assert_failed(conn, 1002)


def test_reserved_bits_on_continuation() -> None:
    conn = Connection(Role.SERVER)
    frame = bytearray(masked(Opcode.CONT, b"b"))
    frame[0] |= 0x20
    conn.receive_data(masked(Opcode.BINARY, b"a", fin=False) + bytes(frame))
    assert_failed(conn, 1002)


def _deflating_server() -> Connection:
    conn = Connection(Role.SERVER)
    conn.use_deflate(
        PerMessageDeflate(
            local_no_context_takeover=False,
            remote_no_context_takeover=False,
            local_max_window_bits=15,
            remote_max_window_bits=15,
        )
    )
    return conn


def test_rsv1_allowed_by_extension_only_on_data_frames() -> None:
    conn = _deflating_server()
    compressed = zlib.compressobj(wbits=-15)
    payload = compressed.compress(b"raw") + compressed.flush(zlib.Z_SYNC_FLUSH)
    conn.receive_data(masked(Opcode.BINARY, payload[:-4], rsv1=True))
    assert conn.events_received() == [b"raw"]
    assert conn.failure is None
    # RSV2 is still not negotiated.
    frame = bytearray(masked(Opcode.BINARY, b"raw"))
    frame[0] |= 0x20
    conn.receive_data(bytes(frame))
    assert_failed(conn, 1002)
    # And control frames never carry RSV bits.
    conn = _deflating_server()
    conn.receive_data(masked(Opcode.PING, b"x", rsv1=True))
    assert conn.events_received() == []
    assert_failed(conn, 1002)


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.CLOSE])
def test_unmasked_frame_to_server(opcode: int, feed: Feed) -> None:
    conn = Connection(Role.SERVER)
    feed(conn, unmasked(opcode, b"hi"))
    assert conn.events_received() == []
    assert_failed(conn, 1002)


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.PONG, Opcode.CLOSE])
def test_masked_frame_to_client(opcode: int, feed: Feed) -> None:
    conn = Connection(Role.CLIENT)
    feed(conn, masked(opcode, b"hi"))
    assert conn.events_received() == []
    assert_failed(conn, 1002)


def test_unmasked_frame_to_server_fails_on_two_bytes() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_data(unmasked(Opcode.BINARY, b"x" * 1000)[:2])
    assert_failed(conn, 1002)


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
@pytest.mark.parametrize("role", list(Role))
def test_fragmented_control_frame(role: Role, opcode: int, feed: Feed) -> None:
    conn = Connection(role)
    feed(conn, frame_for(role, opcode, b"", fin=False))
    assert conn.events_received() == []
    assert_failed(conn, 1002)


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
@pytest.mark.parametrize("role", list(Role))
def test_control_payload_126(role: Role, opcode: int, feed: Feed) -> None:
    payload = b"\x03\xe8" + b"x" * 124 if opcode == Opcode.CLOSE else b"x" * 126
    conn = Connection(role)
    feed(conn, frame_for(role, opcode, payload))
    assert conn.events_received() == []
    assert_failed(conn, 1002)


def test_control_payload_too_long_fails_from_header() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_data(masked(Opcode.PING, b"x" * 126)[:2])
    assert_failed(conn, 1002)


def test_control_payload_125_is_accepted(feed: Feed) -> None:
    conn = Connection(Role.SERVER)
    feed(conn, masked(Opcode.PING, b"p" * 125) + masked(Opcode.PONG, b"q" * 125))
    assert conn.events_received() == [Ping(b"p" * 125), Pong(b"q" * 125)]
    assert conn.failure is None


@pytest.mark.parametrize("fin", [True, False])
@pytest.mark.parametrize("role", list(Role))
def test_continuation_without_start(role: Role, fin: bool, feed: Feed) -> None:
    conn = Connection(role)
    feed(conn, frame_for(role, Opcode.CONT, b"x", fin=fin))
    assert conn.events_received() == []
    assert_failed(conn, 1002)


def test_continuation_after_finished_message(feed: Feed) -> None:
    conn = Connection(Role.SERVER)
    feed(conn, masked(Opcode.TEXT, b"done") + masked(Opcode.CONT, b"more"))
    assert conn.events_received() == ["done"]
    assert_failed(conn, 1002)


@pytest.mark.parametrize("first", [Opcode.TEXT, Opcode.BINARY])
@pytest.mark.parametrize("second", [Opcode.TEXT, Opcode.BINARY])
@pytest.mark.parametrize("role", list(Role))
def test_new_message_inside_fragmented_message(
    role: Role, first: int, second: int, feed: Feed
) -> None:
    conn = Connection(role)
    data = frame_for(role, first, b"a", fin=False) + frame_for(role, second, b"b")
    feed(conn, data)
    assert conn.events_received() == []
    assert_failed(conn, 1002)


@pytest.mark.parametrize("max_message_size", [None, DEFAULT_MAX_MESSAGE_SIZE])
def test_64_bit_length_with_msb_set(max_message_size: int | None, feed: Feed) -> None:
    conn = Connection(Role.SERVER, max_message_size=max_message_size)
    header = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", (1 << 63) | 5) + b"mask"
    feed(conn, header)
    assert_failed(conn, 1002)


def test_64_bit_length_with_msb_set_to_client() -> None:
    conn = Connection(Role.CLIENT, max_message_size=None)
    conn.receive_data(bytes([0x82, 127]) + struct.pack("!Q", 1 << 63))
    assert_failed(conn, 1002)


# ---------------------------------------------------------------------------------------------
# UTF-8: 1007, failing fast
# ---------------------------------------------------------------------------------------------

INVALID_UTF8 = [
    b"\xff",
    b"\xfe",
    b"\x80",  # lone continuation byte
    b"\xc0\xaf",  # overlong '/'
    b"\xe0\x80\xaf",  # overlong
    b"\xed\xa0\x80",  # UTF-16 surrogate U+D800
    b"\xed\xbf\xbf",  # UTF-16 surrogate U+DFFF
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf5\x80\x80\x80",
    b"a\xc3(",  # bad continuation
]


@pytest.mark.parametrize("bad", INVALID_UTF8)
@pytest.mark.parametrize("role", list(Role))
def test_invalid_utf8_text(role: Role, bad: bytes, feed: Feed) -> None:
    conn = Connection(role)
    feed(conn, frame_for(role, Opcode.TEXT, b"ok " + bad + b" tail"))
    assert conn.events_received() == []
    assert_failed(conn, 1007, InvalidPayload)


@pytest.mark.parametrize("bad", INVALID_UTF8)
def test_invalid_utf8_in_fragmented_text(bad: bytes, feed: Feed) -> None:
    conn = Connection(Role.SERVER)
    data = (
        masked(Opcode.TEXT, b"first ", fin=False)
        + masked(Opcode.CONT, bad, fin=False)
        + masked(Opcode.CONT, b"end")
    )
    feed(conn, data)
    assert conn.events_received() == []
    assert_failed(conn, 1007, InvalidPayload)


def test_invalid_utf8_is_not_checked_in_binary() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_data(masked(Opcode.BINARY, b"\xff\xed\xa0\x80"))
    assert conn.events_received() == [b"\xff\xed\xa0\x80"]


@pytest.mark.parametrize("bad", [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90", b"\xed\xa0"])
@pytest.mark.parametrize("role", list(Role))
def test_invalid_utf8_fails_before_frame_is_complete(role: Role, bad: bytes) -> None:
    payload = b"ok" + bad + b"x" * 100_000
    frame = frame_for(role, Opcode.TEXT, payload)
    header_len = 2 + 8 + (4 if role is Role.SERVER else 0)
    conn = Connection(role)
    conn.receive_data(frame[:header_len])
    assert conn.failure is None
    # Feeding the first bytes only, one at a time, is enough to fail.
    feed_bytewise(conn, frame[header_len : header_len + 2 + len(bad)])
    assert_failed(conn, 1007, InvalidPayload)


def test_surrogate_fails_on_its_second_byte() -> None:
    """ED A0..BF can never complete; a lenient decoder would wait for a third byte."""
    frame = masked(Opcode.TEXT, b"\xed\xa0\x80" + b"x" * 1000)
    conn = Connection(Role.SERVER)
    conn.receive_data(frame[: 4 + 4 + 1])  # 16-bit length header, mask, then ED
    assert conn.failure is None
    conn.receive_data(frame[9:10])  # A0
    assert_failed(conn, 1007, InvalidPayload)


def test_valid_prefix_of_big_text_is_not_failed() -> None:
    text = "é😀€" * 10_000
    frame = masked(Opcode.TEXT, text.encode())
    conn = Connection(Role.SERVER)
    feed_chunks(conn, frame, 7)
    assert conn.events_received() == [text]
    assert conn.failure is None


@pytest.mark.parametrize("char", ["é", "€", "😀", "\U0010ffff", "\ud7ff", "\ue000"])
def test_multibyte_char_split_across_fragments(char: str, feed: Feed) -> None:
    encoded = ("a" + char + "b").encode()
    for cut in range(len(encoded) + 1):
        conn = Connection(Role.SERVER)
        data = masked(Opcode.TEXT, encoded[:cut], fin=False) + masked(Opcode.CONT, encoded[cut:])
        feed(conn, data)
        assert conn.events_received() == ["a" + char + "b"], cut
        assert conn.failure is None


def test_multibyte_char_split_one_byte_per_fragment() -> None:
    encoded = "😀".encode()
    data = masked(Opcode.TEXT, encoded[:1], fin=False)
    for byte in encoded[1:-1]:
        data += masked(Opcode.CONT, bytes([byte]), fin=False)
    data += masked(Opcode.CONT, encoded[-1:])
    conn = Connection(Role.SERVER)
    conn.receive_data(data)
    assert conn.events_received() == ["😀"]


@pytest.mark.parametrize("tail", [b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xed"])
def test_text_ending_mid_sequence(tail: bytes, feed: Feed) -> None:
    conn = Connection(Role.SERVER)
    feed(conn, masked(Opcode.TEXT, b"abc" + tail))
    assert conn.events_received() == []
    assert_failed(conn, 1007, InvalidPayload)

    conn = Connection(Role.SERVER)
    feed(conn, masked(Opcode.TEXT, b"abc" + tail, fin=False) + masked(Opcode.CONT, b""))
    assert conn.events_received() == []
    assert_failed(conn, 1007, InvalidPayload)


def test_text_mid_sequence_between_fragments_is_not_failed_early() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_data(masked(Opcode.TEXT, b"\xe2\x82", fin=False))
    assert conn.failure is None
    conn.receive_data(masked(Opcode.CONT, b"\xac"))
    assert conn.events_received() == ["€"]


# ---------------------------------------------------------------------------------------------
# Size limits: 1009
# ---------------------------------------------------------------------------------------------


def test_max_message_size_single_frame(feed: Feed) -> None:
    conn = Connection(Role.SERVER, max_message_size=100)
    feed(conn, masked(Opcode.BINARY, b"x" * 100) + masked(Opcode.TEXT, b"y" * 101))
    assert conn.events_received() == [b"x" * 100]
    assert_failed(conn, 1009, PayloadTooBig)


def test_max_message_size_across_fragments(feed: Feed) -> None:
    conn = Connection(Role.SERVER, max_message_size=100)
    data = (
        masked(Opcode.TEXT, b"a" * 50, fin=False)
        + masked(Opcode.CONT, b"b" * 50)  # exactly 100: fine
        + masked(Opcode.BINARY, b"c" * 60, fin=False)
        + masked(Opcode.PING, b"control frames do not count")
        + masked(Opcode.CONT, b"d" * 40, fin=False)
        + masked(Opcode.CONT, b"e")
    )
    feed(conn, data)
    assert conn.events_received() == ["a" * 50 + "b" * 50, Ping(b"control frames do not count")]
    close = assert_failed(conn, 1009, PayloadTooBig)
    assert close.opcode == Opcode.CLOSE


def test_message_size_counter_resets_between_messages(feed: Feed) -> None:
    conn = Connection(Role.SERVER, max_message_size=10)
    data = b"".join(
        masked(Opcode.TEXT, b"12345", fin=False) + masked(Opcode.CONT, b"67890") for _ in range(5)
    )
    data += masked(Opcode.BINARY, b"0123456789") * 3
    feed(conn, data)
    assert conn.events_received() == ["1234567890"] * 5 + [b"0123456789"] * 3
    assert conn.failure is None


@pytest.mark.parametrize("role", list(Role))
def test_oversized_message_refused_from_header_alone(role: Role) -> None:
    size = 10 * 2**20
    header = bytes([0x82, (0x80 if role is Role.SERVER else 0) | 127]) + struct.pack("!Q", size)
    if role is Role.SERVER:
        header += b"\x01\x02\x03\x04"
    conn = Connection(role)  # default limit: 1 MiB
    conn.receive_data(header)
    assert_failed(conn, 1009, PayloadTooBig)


def test_oversized_message_refused_from_header_bytewise() -> None:
    header = bytes([0x81, 0xFF]) + struct.pack("!Q", 10 * 2**20) + b"\x01\x02\x03\x04"
    conn = Connection(Role.SERVER)
    feed_bytewise(conn, header[:-1])
    assert conn.failure is None  # the header is not complete yet
    conn.receive_data(header[-1:])
    assert_failed(conn, 1009, PayloadTooBig)


def test_fragment_crossing_limit_refused_from_its_header() -> None:
    conn = Connection(Role.SERVER, max_message_size=1000)
    conn.receive_data(masked(Opcode.BINARY, b"x" * 600, fin=False))
    conn.receive_data(masked(Opcode.CONT, b"y" * 600)[:8])  # header (16-bit length) + mask
    assert_failed(conn, 1009, PayloadTooBig)


def test_no_message_limit() -> None:
    conn = Connection(Role.SERVER, max_message_size=None)
    payload = b"z" * (DEFAULT_MAX_MESSAGE_SIZE + 1)
    conn.receive_data(masked(Opcode.BINARY, payload))
    assert conn.events_received() == [payload]


def test_max_frame_size(feed: Feed) -> None:
    conn = Connection(Role.SERVER, max_frame_size=10)
    data = (
        masked(Opcode.TEXT, b"0123456789", fin=False)
        + masked(Opcode.CONT, b"0123456789", fin=False)
        + masked(Opcode.CONT, b"0123456789")
        + masked(Opcode.BINARY, b"01234567890")
    )
    feed(conn, data)
    assert conn.events_received() == ["0123456789" * 3]
    assert_failed(conn, 1009, PayloadTooBig)


def test_max_frame_size_on_fragment() -> None:
    conn = Connection(Role.CLIENT, max_frame_size=4)
    conn.receive_data(unmasked(Opcode.BINARY, b"abcd", fin=False) + unmasked(Opcode.CONT, b"efghi"))
    assert conn.events_received() == []
    assert_failed(conn, 1009, PayloadTooBig)


def test_max_frame_size_does_not_apply_to_control_frames() -> None:
    conn = Connection(Role.SERVER, max_frame_size=2, max_message_size=2)
    conn.receive_data(masked(Opcode.PING, b"longer than two"))
    assert conn.events_received() == [Ping(b"longer than two")]
    assert conn.failure is None


# ---------------------------------------------------------------------------------------------
# Ping and pong
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"x", b"Hello", bytes(range(125))])
@pytest.mark.parametrize("role", list(Role))
def test_ping_is_answered_with_pong(role: Role, payload: bytes, feed: Feed) -> None:
    conn = Connection(role)
    feed(conn, frame_for(role, Opcode.PING, payload))
    assert conn.events_received() == [Ping(payload)]
    (pong,) = sent_frames(conn)
    assert pong.opcode == Opcode.PONG
    assert pong.fin
    assert pong.payload == payload
    assert pong.masked is (role is Role.CLIENT)
    assert conn.state is State.OPEN


def test_several_pings_answered_in_order(feed: Feed) -> None:
    conn = Connection(Role.SERVER)
    feed(conn, masked(Opcode.PING, b"1") + masked(Opcode.PING, b"2") + masked(Opcode.PING, b"3"))
    assert conn.events_received() == [Ping(b"1"), Ping(b"2"), Ping(b"3")]
    assert sent(conn) == unmasked(Opcode.PONG, b"1") + unmasked(Opcode.PONG, b"2") + unmasked(
        Opcode.PONG, b"3"
    )


@pytest.mark.parametrize("role", list(Role))
def test_pong_is_an_event_and_not_answered(role: Role, feed: Feed) -> None:
    conn = Connection(role)
    feed(conn, frame_for(role, Opcode.PONG, b"beat"))
    assert conn.events_received() == [Pong(b"beat")]
    assert conn.data_to_send() == []


def test_ping_interleaved_in_fragmented_message(feed: Feed) -> None:
    conn = Connection(Role.SERVER)
    data = (
        masked(Opcode.TEXT, b"Hel", fin=False)
        + masked(Opcode.PING, b"p1")
        + masked(Opcode.CONT, b"l", fin=False)
        + masked(Opcode.PONG, b"p2")
        + masked(Opcode.PING, b"p3")
        + masked(Opcode.CONT, b"o")
        + masked(Opcode.TEXT, b"next")
    )
    feed(conn, data)
    assert conn.events_received() == [Ping(b"p1"), Pong(b"p2"), Ping(b"p3"), "Hello", "next"]
    assert sent(conn) == unmasked(Opcode.PONG, b"p1") + unmasked(Opcode.PONG, b"p3")


def test_ping_interleaved_with_multibyte_split(feed: Feed) -> None:
    encoded = "x€y".encode()
    conn = Connection(Role.SERVER)
    data = (
        masked(Opcode.TEXT, encoded[:2], fin=False)
        + masked(Opcode.PING, b"")
        + masked(Opcode.CONT, encoded[2:])
    )
    feed(conn, data)
    assert conn.events_received() == [Ping(b""), "x€y"]


# ---------------------------------------------------------------------------------------------
# Closing handshake
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_peer_close_is_echoed(role: Role, feed: Feed) -> None:
    conn = Connection(role)
    feed(conn, frame_for(role, Opcode.CLOSE, serialize_close(1000, "bye")))
    assert conn.events_received() == [Close(1000, "bye")]
    (echo,) = sent_frames(conn)
    assert echo.opcode == Opcode.CLOSE
    assert close_code_of(echo) == 1000
    assert echo.masked is (role is Role.CLIENT)
    assert conn.state is State.CLOSED
    assert conn.close_rcvd == Close(1000, "bye")
    assert conn.close_sent is not None and conn.close_sent.code == 1000
    assert conn.close_code == 1000
    assert conn.close_reason == "bye"
    assert conn.failure is None
    exc = conn.close_exception()
    assert type(exc) is ConnectionClosedOK
    assert (exc.code, exc.reason, exc.sent_code) == (1000, "bye", 1000)


@pytest.mark.parametrize("role", list(Role))
def test_peer_close_with_application_code_is_echoed(role: Role) -> None:
    conn = Connection(role)
    conn.receive_data(frame_for(role, Opcode.CLOSE, serialize_close(4321, "app")))
    assert conn.events_received() == [Close(4321, "app")]
    (echo,) = sent_frames(conn)
    assert close_code_of(echo) == 4321


def test_bytes_after_close_are_ignored(feed: Feed) -> None:
    conn = Connection(Role.SERVER)
    data = (
        masked(Opcode.TEXT, b"before")
        + masked(Opcode.CLOSE, serialize_close(1000, "bye"))
        + masked(Opcode.TEXT, b"after")
        + masked(Opcode.PING, b"ignored")
        + b"\xff\xff garbage that would fail the connection"
    )
    feed(conn, data)
    assert conn.events_received() == ["before", Close(1000, "bye")]
    frames = sent_frames(conn)
    assert [f.opcode for f in frames] == [Opcode.CLOSE]
    assert conn.failure is None
    conn.receive_data(masked(Opcode.TEXT, b"later"))
    conn.receive_data(unmasked(Opcode.TEXT, b"unmasked"))
    assert conn.events_received() == []
    assert conn.data_to_send() == []
    assert conn.failure is None


@pytest.mark.parametrize("role", list(Role))
def test_peer_empty_close_is_echoed_empty(role: Role, feed: Feed) -> None:
    conn = Connection(role)
    feed(conn, frame_for(role, Opcode.CLOSE, b""))
    assert conn.events_received() == [Close(1005, "")]
    (echo,) = sent_frames(conn)
    assert echo.opcode == Opcode.CLOSE
    assert echo.payload == b""
    assert conn.state is State.CLOSED
    assert conn.close_code == 1005
    exc = conn.close_exception()
    assert type(exc) is ConnectionClosedOK
    assert exc.code == 1005


@pytest.mark.parametrize("role", list(Role))
def test_we_close_first(role: Role, feed: Feed) -> None:
    conn = Connection(role)
    conn.send_close(1000, "done")
    assert conn.state is State.CLOSING
    assert not conn.close_expected()
    (close,) = sent_frames(conn)
    assert close.opcode == Opcode.CLOSE
    assert close.payload == b"\x03\xe8done"
    assert close.masked is (role is Role.CLIENT)
    assert conn.close_sent == Close(1000, "done")

    # The peer may still send data before it answers; it is delivered, pings are reported.
    feed(
        conn,
        frame_for(role, Opcode.TEXT, b"late")
        + frame_for(role, Opcode.BINARY, b"data", fin=False)
        + frame_for(role, Opcode.CONT, b"!")
        + frame_for(role, Opcode.PING, b"p"),
    )
    assert conn.events_received() == ["late", b"data!", Ping(b"p")]
    assert conn.state is State.CLOSING
    # No data frame may follow our close frame.
    assert all(f.opcode != Opcode.CLOSE for f in sent_frames(conn))

    feed(conn, frame_for(role, Opcode.CLOSE, serialize_close(1000, "ok")))
    assert conn.events_received() == [Close(1000, "ok")]
    assert conn.data_to_send() == []  # no second close frame
    assert conn.state is State.CLOSED
    assert conn.close_sent == Close(1000, "done")
    if role is Role.SERVER:
        assert conn.close_expected()
    else:
        # RFC 6455 §7.1.1: the client waits for the server to close the TCP connection.
        assert not conn.close_expected()
        conn.receive_eof()
        assert conn.close_expected()
    exc = conn.close_exception()
    assert type(exc) is ConnectionClosedOK
    assert (exc.code, exc.reason, exc.sent_code) == (1000, "ok", 1000)


def test_client_waits_for_eof_after_peer_close() -> None:
    conn = Connection(Role.CLIENT)
    conn.receive_data(unmasked(Opcode.CLOSE, serialize_close(1001)))
    assert conn.close_pending and not conn.close_expected()
    (echo,) = sent_frames(conn)
    assert close_code_of(echo) == 1001
    assert conn.state is State.CLOSED
    assert not conn.close_expected()
    conn.receive_eof()
    assert conn.close_expected()
    assert type(conn.close_exception()) is ConnectionClosedOK


def test_server_closes_after_peer_close() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_data(masked(Opcode.CLOSE, serialize_close(1001)))
    # The echo is owed until the I/O layer takes the output; then the server closes first.
    assert not conn.close_expected()
    sent_frames(conn)
    assert conn.close_expected()


def test_reply_to_a_message_leaves_before_the_close_echo() -> None:
    """RFC 6455 §5.5.1: a message and a close in one read; the answer goes before the echo."""
    conn = Connection(Role.SERVER)
    conn.receive_data(masked(Opcode.TEXT, b"hi") + masked(Opcode.CLOSE, serialize_close(1000)))
    assert conn.events_received() == ["hi", Close(1000, "")]
    conn.send_text("hi back")
    text, close = sent_frames(conn)
    assert (text.opcode, text.payload) == (Opcode.TEXT, b"hi back")
    assert close.opcode == Opcode.CLOSE and close_code_of(close) == 1000


def test_reply_to_a_message_leaves_before_the_failure() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_data(masked(Opcode.TEXT, b"hi") + masked(Opcode.TEXT, b"\xff"))
    assert conn.events_received() == ["hi"]
    conn.send_text("hi")
    text, close = sent_frames(conn)
    assert text.opcode == Opcode.TEXT and close_code_of(close) == 1007


def test_send_close_without_status() -> None:
    conn = Connection(Role.SERVER)
    conn.send_close(None)
    (close,) = sent_frames(conn)
    assert close.payload == b""
    assert conn.close_sent == Close(1005, "")
    conn.receive_data(masked(Opcode.CLOSE, b""))
    assert type(conn.close_exception()) is ConnectionClosedOK


@pytest.mark.parametrize(
    ("code", "reason"),
    [(999, ""), (1004, ""), (1006, ""), (1015, ""), (2000, ""), (5000, ""), (1000, "x" * 124)],
)
def test_send_close_with_invalid_arguments(code: int, reason: str) -> None:
    conn = Connection(Role.SERVER)
    with pytest.raises(ValueError):
        conn.send_close(code, reason)
    assert conn.state is State.OPEN
    assert conn.close_sent is None
    assert conn.data_to_send() == []
    conn.send_text("still open")
    assert sent_frames(conn)[0].payload == b"still open"


SENDERS: dict[str, Callable[[Connection], None]] = {
    "text": lambda c: c.send_text("x"),
    "binary": lambda c: c.send_binary(b"x"),
    "message": lambda c: c.send_message("x"),
    "fragment": lambda c: c.send_fragment(b"x", fin=True),
    "ping": lambda c: c.send_ping(b"x"),
    "pong": lambda c: c.send_pong(b"x"),
    "close": lambda c: c.send_close(1000),
}


@pytest.mark.parametrize("sender", list(SENDERS))
@pytest.mark.parametrize("how", ["we-closed", "peer-closed", "eof", "failed"])
def test_send_after_close_raises_invalid_state(how: str, sender: str) -> None:
    conn = Connection(Role.SERVER)
    if how == "we-closed":
        conn.send_close()
        assert conn.state is State.CLOSING
    elif how == "peer-closed":
        conn.receive_data(masked(Opcode.CLOSE, b""))
    elif how == "eof":
        conn.receive_eof()
    else:
        conn.receive_data(unmasked(Opcode.TEXT, b""))
        assert conn.failure is not None
    conn.data_to_send()
    with pytest.raises(InvalidState):
        SENDERS[sender](conn)
    assert conn.data_to_send() == []


@pytest.mark.parametrize("role", list(Role))
def test_eof_without_close(role: Role) -> None:
    conn = Connection(role)
    conn.receive_data(frame_for(role, Opcode.TEXT, b"hi"))
    conn.receive_eof()
    assert conn.events_received() == ["hi"]
    assert conn.state is State.CLOSED
    assert conn.eof_received
    assert conn.close_expected()
    assert conn.close_rcvd is None
    assert conn.close_code == 1006
    assert conn.close_reason == ""
    exc = conn.close_exception()
    assert type(exc) is ConnectionClosedError
    assert (exc.code, exc.reason, exc.sent_code) == (1006, "", None)
    # Nothing is parsed after EOF.
    conn.receive_data(frame_for(role, Opcode.TEXT, b"late"))
    assert conn.events_received() == []


def test_eof_after_we_sent_close() -> None:
    conn = Connection(Role.CLIENT)
    conn.send_close(1000)
    conn.receive_eof()
    exc = conn.close_exception()
    assert type(exc) is ConnectionClosedError
    assert (exc.code, exc.sent_code) == (1006, 1000)


@pytest.mark.parametrize(
    ("ours", "theirs", "ok"),
    [
        (None, 1000, True),  # peer started, we echo
        (None, 1001, True),
        (None, None, True),  # empty close frame: 1005
        (None, 1011, False),
        (None, 4000, False),
        (1000, 1000, True),
        (1001, 1000, True),
        (1000, None, True),
        (1000, 1002, False),
        (1011, 1011, False),
        (3000, 1000, False),
    ],
)
def test_close_exception_classes(ours: int | None, theirs: int | None, ok: bool) -> None:
    conn = Connection(Role.SERVER)
    if ours is not None:
        conn.send_close(ours)
    conn.receive_data(masked(Opcode.CLOSE, serialize_close(theirs, "r" if theirs else "")))
    conn.data_to_send()
    exc = conn.close_exception()
    assert type(exc) is (ConnectionClosedOK if ok else ConnectionClosedError)
    assert exc.code == (theirs if theirs is not None else 1005)
    expected_sent = ours if ours is not None else (theirs if theirs is not None else 1005)
    assert exc.sent_code == expected_sent


def test_close_exception_after_protocol_error() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_data(masked(5))
    conn.data_to_send()
    exc = conn.close_exception()
    assert type(exc) is ConnectionClosedError
    assert (exc.code, exc.sent_code) == (1006, 1002)


@pytest.mark.parametrize(
    ("payload", "code", "exc_type"),
    [
        (b"\x03", 1002, ProtocolError),  # one-byte payload
        (b"\x03\xed", 1002, ProtocolError),  # 1005 on the wire
        (b"\x03\xee", 1002, ProtocolError),  # 1006 on the wire
        (b"\x03\xec", 1002, ProtocolError),  # 1004
        (b"\x03\xf7", 1002, ProtocolError),  # 1015
        (b"\x00\x00", 1002, ProtocolError),
        (b"\x13\x88", 1002, ProtocolError),  # 5000
        (b"\x03\xe8\xff", 1007, InvalidPayload),
        (b"\x03\xe8ok\xed\xa0\x80", 1007, InvalidPayload),
    ],
)
@pytest.mark.parametrize("role", list(Role))
def test_invalid_close_frame_from_peer(
    role: Role, payload: bytes, code: int, exc_type: type[ProtocolError], feed: Feed
) -> None:
    conn = Connection(role)
    feed(conn, frame_for(role, Opcode.CLOSE, payload))
    assert conn.events_received() == []
    assert conn.close_rcvd is None
    assert_failed(conn, code, exc_type)


def test_failure_while_closing_sends_no_second_close() -> None:
    conn = Connection(Role.SERVER)
    conn.send_close(1000)
    conn.data_to_send()
    conn.receive_data(masked(Opcode.TEXT, b"\xff"))
    assert conn.failure is not None and conn.failure.code == 1007
    assert conn.state is State.CLOSED
    assert conn.data_to_send() == []
    assert conn.close_sent == Close(1000, "")
    assert conn.close_expected()
    assert type(conn.close_exception()) is ConnectionClosedError


def test_failure_stops_parsing() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_data(masked(Opcode.TEXT, b"one") + masked(4) + masked(Opcode.TEXT, b"two"))
    assert conn.events_received() == ["one"]
    assert_failed(conn, 1002)
    conn.receive_data(masked(Opcode.TEXT, b"three"))
    assert conn.events_received() == []
    assert conn.data_to_send() == []


# ---------------------------------------------------------------------------------------------
# fail()
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("short", "short"),
        ("a" * 123, "a" * 123),
        ("a" * 200, "a" * 123),
        ("é" * 100, "é" * 61),  # 2-byte chars: 122 bytes, the 62nd char would straddle 123
        ("€" * 100, "€" * 41),  # 3-byte chars: exactly 123 bytes
        ("😀" * 40, "😀" * 30),  # 4-byte chars: 120 bytes
        ("a" + "😀" * 40, "a" + "😀" * 30),  # 121 bytes
        ("ab" + "😀" * 40, "ab" + "😀" * 30),  # 122 bytes
        ("abc" + "😀" * 40, "abc" + "😀" * 30),  # 123 bytes
    ],
)
@pytest.mark.parametrize("role", list(Role))
def test_fail_truncates_reason_at_char_boundary(role: Role, reason: str, expected: str) -> None:
    conn = Connection(role)
    conn.fail(1011, reason)
    (close,) = sent_frames(conn)
    assert len(close.payload) <= 125
    assert parse_close(close.payload) == (1011, expected)
    assert conn.close_sent == Close(1011, expected)
    assert conn.state is State.CLOSED
    assert conn.close_expected() is (role is Role.SERVER)


def test_fail_when_closing_sends_nothing() -> None:
    conn = Connection(Role.SERVER)
    conn.send_close(1001)
    conn.data_to_send()
    conn.fail(1011, "late")
    assert conn.data_to_send() == []
    assert conn.state is State.CLOSED
    assert conn.close_sent == Close(1001, "")


def test_long_protocol_error_reason_is_truncated() -> None:
    # The frame-size error message embeds numbers; whatever its length, the close frame is valid.
    conn = Connection(Role.SERVER, max_frame_size=1)
    conn.receive_data(masked(Opcode.BINARY, b"xx"))
    close = assert_failed(conn, 1009)
    assert close.payload[2:].decode() == str(conn.failure)[:123]


# ---------------------------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------------------------


def test_client_frames_are_masked_server_frames_are_not() -> None:
    for role in Role:
        conn = Connection(role)
        conn.send_text("text")
        conn.send_binary(b"binary")
        conn.send_fragment("frag", fin=False)
        conn.send_fragment("ment", fin=True)
        conn.send_ping(b"ping")
        conn.send_pong(b"pong")
        conn.send_close(1000, "close")
        frames = sent_frames(conn)
        assert [f.payload for f in frames] == [
            b"text",
            b"binary",
            b"frag",
            b"ment",
            b"ping",
            b"pong",
            b"\x03\xe8close",
        ]
        assert [f.opcode for f in frames] == [1, 2, 1, 0, 9, 10, 8]
        assert all(f.masked is (role is Role.CLIENT) for f in frames), role
        assert all(f.rsv == 0 for f in frames)


def test_client_mask_keys_vary() -> None:
    conn = Connection(Role.CLIENT)
    for _ in range(8):
        conn.send_binary(b"same")
    keys = {f.mask_key for f in sent_frames(conn)}
    assert len(keys) > 1


def test_server_output_is_exact() -> None:
    conn = Connection(Role.SERVER)
    conn.send_text("Hello")
    conn.send_ping(b"Hello")
    assert conn.data_to_send() == [
        bytes.fromhex("810548656c6c6f"),
        bytes.fromhex("890548656c6c6f"),
    ]
    assert conn.data_to_send() == []


@pytest.mark.parametrize(
    ("message", "opcode"),
    [("str", 1), (b"bytes", 2), (bytearray(b"bytearray"), 2), (memoryview(b"view"), 2)],
)
def test_send_message(message: str | bytes | bytearray | memoryview, opcode: int) -> None:
    conn = Connection(Role.CLIENT)
    conn.send_message(message)
    (frame,) = sent_frames(conn)
    assert frame.opcode == opcode
    expected = message.encode() if isinstance(message, str) else bytes(message)
    assert frame.payload == expected


def test_send_large_binary_uses_64_bit_length() -> None:
    conn = Connection(Role.SERVER)
    conn.send_binary(b"\x00" * 65536)
    out = sent(conn)
    assert out[:10] == bytes.fromhex("827f0000000000010000")


@pytest.mark.parametrize("role", list(Role))
def test_send_fragment_sequences(role: Role) -> None:
    conn = Connection(role)
    conn.send_fragment("Hel", fin=False)
    conn.send_fragment("", fin=False)
    conn.send_ping(b"between")
    conn.send_fragment("lo", fin=True)
    conn.send_fragment(b"\x01", fin=False)
    conn.send_fragment(bytearray(b"\x02"), fin=False)
    conn.send_fragment(memoryview(b"\x03"), fin=True)
    conn.send_fragment(b"single", fin=True)
    conn.send_fragment("single", fin=True)
    frames = sent_frames(conn)
    assert [(f.opcode, f.fin, f.payload) for f in frames] == [
        (Opcode.TEXT, False, b"Hel"),
        (Opcode.CONT, False, b""),
        (Opcode.PING, True, b"between"),
        (Opcode.CONT, True, b"lo"),
        (Opcode.BINARY, False, b"\x01"),
        (Opcode.CONT, False, b"\x02"),
        (Opcode.CONT, True, b"\x03"),
        (Opcode.BINARY, True, b"single"),
        (Opcode.TEXT, True, b"single"),
    ]


@pytest.mark.parametrize(("first", "second"), [("text", b"bytes"), (b"bytes", "text")])
def test_send_fragment_mixing_types_raises(first: str | bytes, second: str | bytes) -> None:
    conn = Connection(Role.SERVER)
    conn.send_fragment(first, fin=False)
    conn.data_to_send()
    with pytest.raises(InvalidState):
        conn.send_fragment(second, fin=False)
    with pytest.raises(InvalidState):
        conn.send_fragment(second, fin=True)
    assert conn.data_to_send() == []
    # The message in progress can still be finished with the right type.
    conn.send_fragment(first, fin=True)
    (frame,) = sent_frames(conn)
    assert (frame.opcode, frame.fin) == (Opcode.CONT, True)


def test_no_other_message_while_sending_fragments() -> None:
    conn = Connection(Role.SERVER)
    conn.send_fragment(b"a", fin=False)
    with pytest.raises(InvalidState):
        conn.send_text("no")
    with pytest.raises(InvalidState):
        conn.send_binary(b"no")
    with pytest.raises(InvalidState):
        conn.send_message("no")
    conn.send_pong(b"control frames are fine")
    conn.send_fragment(b"b", fin=True)
    conn.send_text("now it is fine")
    frames = sent_frames(conn)
    assert [f.opcode for f in frames] == [2, 10, 0, 1]


def test_control_payload_limits_on_send() -> None:
    conn = Connection(Role.SERVER)
    conn.send_ping(b"x" * 125)
    conn.send_pong(b"x" * 125)
    with pytest.raises(ValueError):
        conn.send_ping(b"x" * 126)
    with pytest.raises(ValueError):
        conn.send_pong(b"x" * 126)
    assert len(sent_frames(conn)) == 2
    assert conn.state is State.OPEN


@pytest.mark.parametrize("sender", [Role.CLIENT, Role.SERVER])
def test_round_trip_between_two_connections(sender: Role) -> None:
    receiver_role = Role.SERVER if sender is Role.CLIENT else Role.CLIENT
    a = Connection(sender)
    b = Connection(receiver_role)
    a.send_text("héllo")
    a.send_binary(b"\x00" * 70_000)
    a.send_fragment("frag", fin=False)
    a.send_ping(b"are you there")
    a.send_fragment("ment", fin=True)
    a.send_pong(b"unsolicited")
    a.send_close(1001, "going")
    feed_bytewise(b, sent(a))
    assert b.events_received() == [
        "héllo",
        b"\x00" * 70_000,
        Ping(b"are you there"),
        "fragment",
        Pong(b"unsolicited"),
        Close(1001, "going"),
    ]
    # b answered the ping, then echoed the close: a reads both.
    a.receive_data(sent(b))
    assert a.events_received() == [Pong(b"are you there"), Close(1001, "")]
    assert a.state is State.CLOSED and b.state is State.CLOSED
    assert type(a.close_exception()) is ConnectionClosedOK
    assert type(b.close_exception()) is ConnectionClosedOK


def test_protocol_error_class_codes() -> None:
    assert ProtocolError("x").code == 1002
    assert InvalidPayload("x").code == 1007
    assert PayloadTooBig("x").code == 1009


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({}, 2**20),  # the default max_message_size
        ({"max_message_size": None}, -1),
        ({"max_message_size": 100, "max_frame_size": 10}, 10),
        ({"max_message_size": 10, "max_frame_size": None}, 10),
    ],
)
def test_frames_takeable_between_messages_only(
    limits: dict[str, int | None], expected: int
) -> None:
    """When a compiled reader may take over the bytes that follow, and up to what size."""
    conn = Connection(Role.SERVER, **limits)  # type: ignore[arg-type]
    assert conn.frames_takeable() == expected
    conn.receive_data(masked(Opcode.TEXT, b"whole"))
    assert conn.frames_takeable() == expected
    conn.receive_data(masked(Opcode.TEXT, b"frag", fin=False))  # a message partly read
    assert conn.frames_takeable() is None
    conn.receive_data(masked(Opcode.CONT, b"ment"))
    assert conn.frames_takeable() == expected
    conn.receive_data(masked(Opcode.BINARY, b"part")[:4])  # a frame partly read
    assert conn.frames_takeable() is None
    conn.receive_data(masked(Opcode.BINARY, b"part")[4:])
    assert conn.frames_takeable() == expected
    conn.receive_data(masked(Opcode.CLOSE, serialize_close(1000, "")))  # our close owed
    assert conn.frames_takeable() is None
    conn.data_to_send()
    assert conn.frames_takeable() is None


def test_frames_takeable_with_an_extension_only_if_the_taker_decodes() -> None:
    conn = _deflating_server()
    assert conn.frames_takeable() is None
    assert conn.frames_takeable(extensions=True) == 2**20
