"""Frame serialisation and close payloads (RFC 6455 §5, §7.4), including the §5.7 examples."""

from __future__ import annotations

import struct

import pytest

from shakehands.protocol.connection import Close, Connection, Ping, Pong, Role
from shakehands.protocol.errors import CloseCode, InvalidPayload, ProtocolError
from shakehands.protocol.frames import (
    CONTROL_OPCODES,
    DATA_OPCODES,
    MAX_CONTROL_PAYLOAD,
    Opcode,
    is_valid_close_code,
    parse_close,
    serialize_close,
    serialize_frame,
)

from .helpers import read_frames

RFC_MASK = bytes.fromhex("37fa213d")

# ---------------------------------------------------------------------------------------------
# RFC 6455 §5.7 examples, both ways: serialize_frame writes them, a Connection reads them.
# ---------------------------------------------------------------------------------------------

HELLO_UNMASKED = bytes.fromhex("810548656c6c6f")
HELLO_MASKED = bytes.fromhex("818537fa213d7f9f4d5158")
HEL_FRAGMENT = bytes.fromhex("010348656c")
LO_FRAGMENT = bytes.fromhex("80026c6f")
PING_UNMASKED = bytes.fromhex("890548656c6c6f")
PONG_MASKED = bytes.fromhex("8a8537fa213d7f9f4d5158")


def test_rfc_single_frame_unmasked_text() -> None:
    assert serialize_frame(Opcode.TEXT, b"Hello") == HELLO_UNMASKED
    client = Connection(Role.CLIENT)
    client.receive_data(HELLO_UNMASKED)
    assert client.events_received() == ["Hello"]
    assert client.failure is None


def test_rfc_single_frame_masked_text() -> None:
    assert serialize_frame(Opcode.TEXT, b"Hello", mask=True, mask_key=RFC_MASK) == HELLO_MASKED
    server = Connection(Role.SERVER)
    server.receive_data(HELLO_MASKED)
    assert server.events_received() == ["Hello"]
    assert server.failure is None


def test_rfc_fragmented_unmasked_text() -> None:
    assert serialize_frame(Opcode.TEXT, b"Hel", fin=False) == HEL_FRAGMENT
    assert serialize_frame(Opcode.CONT, b"lo") == LO_FRAGMENT
    client = Connection(Role.CLIENT)
    client.receive_data(HEL_FRAGMENT)
    assert client.events_received() == []
    client.receive_data(LO_FRAGMENT)
    assert client.events_received() == ["Hello"]


def test_rfc_unmasked_ping() -> None:
    assert serialize_frame(Opcode.PING, b"Hello") == PING_UNMASKED
    client = Connection(Role.CLIENT)
    client.receive_data(PING_UNMASKED)
    assert client.events_received() == [Ping(b"Hello")]


def test_rfc_masked_pong() -> None:
    assert serialize_frame(Opcode.PONG, b"Hello", mask=True, mask_key=RFC_MASK) == PONG_MASKED
    server = Connection(Role.SERVER)
    server.receive_data(PONG_MASKED)
    assert server.events_received() == [Pong(b"Hello")]
    assert server.data_to_send() == []


def test_rfc_256_bytes_binary_16_bit_length() -> None:
    payload = bytes(range(256))
    frame = serialize_frame(Opcode.BINARY, payload)
    assert frame[:4] == bytes.fromhex("827e0100")
    assert frame[4:] == payload
    assert len(frame) == 4 + 256
    client = Connection(Role.CLIENT)
    client.receive_data(frame)
    assert client.events_received() == [payload]


def test_rfc_64_kib_binary_64_bit_length() -> None:
    payload = bytes(i & 0xFF for i in range(65536))
    frame = serialize_frame(Opcode.BINARY, payload)
    assert frame[:10] == bytes.fromhex("827f0000000000010000")
    assert frame[10:] == payload
    client = Connection(Role.CLIENT)
    client.receive_data(frame)
    assert client.events_received() == [payload]


# ---------------------------------------------------------------------------------------------
# serialize_frame
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, "8200"),
        (1, "8201"),
        (125, "827d"),
        (126, "827e007e"),
        (127, "827e007f"),
        (65535, "827effff"),
        (65536, "827f0000000000010000"),
        (65537, "827f0000000000010001"),
    ],
)
def test_length_encoding_boundaries(length: int, header: str) -> None:
    frame = serialize_frame(Opcode.BINARY, b"x" * length)
    expected = bytes.fromhex(header)
    assert frame[: len(expected)] == expected
    assert len(frame) == len(expected) + length


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536])
def test_masked_length_encoding(length: int) -> None:
    payload = bytes(i % 251 for i in range(length))
    frame = serialize_frame(Opcode.BINARY, payload, mask=True, mask_key=b"\x01\x02\x03\x04")
    (read,) = read_frames(frame)
    assert read.masked
    assert read.mask_key == b"\x01\x02\x03\x04"
    assert read.payload == payload
    assert read.opcode == Opcode.BINARY
    assert read.fin


def test_fin_and_rsv1_bits() -> None:
    assert serialize_frame(Opcode.TEXT, b"", fin=False)[0] == 0x01
    assert serialize_frame(Opcode.TEXT, b"")[0] == 0x81
    assert serialize_frame(Opcode.TEXT, b"", rsv1=True)[0] == 0xC1
    assert serialize_frame(Opcode.CONT, b"", fin=False, rsv1=True)[0] == 0x40


def test_random_mask_key_when_none_given() -> None:
    frames = [serialize_frame(Opcode.TEXT, b"Hello", mask=True) for _ in range(8)]
    read = [read_frames(f)[0] for f in frames]
    assert all(f.masked and f.payload == b"Hello" for f in read)
    # 8 random 4-byte keys all equal would be a broken RNG, not bad luck.
    assert len({f.mask_key for f in read}) > 1


def test_empty_masked_frame_still_has_key() -> None:
    frame = serialize_frame(Opcode.PING, b"", mask=True, mask_key=b"abcd")
    assert frame == b"\x89\x80abcd"


@pytest.mark.parametrize("payload_type", [bytes, bytearray, memoryview])
def test_payload_types(payload_type: type) -> None:
    payload = payload_type(b"Hello")
    assert serialize_frame(Opcode.TEXT, payload) == HELLO_UNMASKED
    assert serialize_frame(Opcode.TEXT, payload, mask=True, mask_key=RFC_MASK) == HELLO_MASKED


def test_opcode_sets() -> None:
    assert {Opcode.CONT, Opcode.TEXT, Opcode.BINARY} == DATA_OPCODES
    assert {Opcode.CLOSE, Opcode.PING, Opcode.PONG} == CONTROL_OPCODES
    assert [int(op) for op in Opcode] == [0, 1, 2, 8, 9, 10]
    assert MAX_CONTROL_PAYLOAD == 125


# ---------------------------------------------------------------------------------------------
# Close codes and close payloads
# ---------------------------------------------------------------------------------------------

VALID_CODES = [*range(1000, 1004), *range(1007, 1015), *range(3000, 5000)]
#: Every code the RFC and the IANA registry define, and the edges of the 3000-4999 range.
NAMED_VALID_CODES = [*range(1000, 1004), *range(1007, 1015), 3000, 3001, 3999, 4000, 4998, 4999]
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


def test_is_valid_close_code_exhaustive() -> None:
    valid = set(VALID_CODES)
    for code in range(65536):
        assert is_valid_close_code(code) is (code in valid), code


@pytest.mark.parametrize("code", NAMED_VALID_CODES)
def test_valid_codes_round_trip(code: int) -> None:
    payload = serialize_close(code, "reason")
    assert payload == struct.pack("!H", code) + b"reason"
    assert parse_close(payload) == (code, "reason")
    assert parse_close(struct.pack("!H", code)) == (code, "")


def test_every_valid_code_round_trips() -> None:
    for code in VALID_CODES:
        assert parse_close(serialize_close(code, "r")) == (code, "r"), code


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_codes_on_the_wire(code: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_close(struct.pack("!H", code) + b"why")
    assert type(info.value) is ProtocolError
    assert info.value.code == CloseCode.PROTOCOL_ERROR == 1002


@pytest.mark.parametrize("code", [c for c in INVALID_CODES if c != 1005])
def test_invalid_codes_cannot_be_serialized(code: int) -> None:
    with pytest.raises(ValueError):
        serialize_close(code)


def test_no_status_serializes_to_empty_payload() -> None:
    assert serialize_close() == b""
    assert serialize_close(None) == b""
    assert serialize_close(1005) == b""
    with pytest.raises(ValueError):
        serialize_close(None, "a reason without a code")
    with pytest.raises(ValueError):
        serialize_close(1005, "a reason without a code")


def test_one_byte_payload_is_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_close(b"\x03")
    assert info.value.code == 1002


def test_empty_payload_is_1005() -> None:
    assert parse_close(b"") == (1005, "")


@pytest.mark.parametrize(
    "reason", [b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"]
)
def test_invalid_utf8_reason_is_1007(reason: bytes) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_close(b"\x03\xe8" + reason)
    assert info.value.code == CloseCode.INVALID_DATA == 1007


def test_utf8_reason() -> None:
    payload = serialize_close(1001, "au revoir, ça va 😀")
    assert payload[:2] == b"\x03\xe9"
    assert parse_close(payload) == (1001, "au revoir, ça va 😀")


def test_reason_length_limit() -> None:
    assert len(serialize_close(1000, "a" * 123)) == 125
    with pytest.raises(ValueError):
        serialize_close(1000, "a" * 124)
    # The limit is in bytes of UTF-8, not characters.
    assert len(serialize_close(1000, "é" * 61)) == 124
    with pytest.raises(ValueError):
        serialize_close(1000, "é" * 62)


def test_close_frame_through_connection() -> None:
    client = Connection(Role.CLIENT)
    client.receive_data(serialize_frame(Opcode.CLOSE, serialize_close(3000, "app")))
    assert client.events_received() == [Close(3000, "app")]
