"""permessage-deflate (RFC 7692): negotiation on both sides, the frame path, bounded inflating."""

from __future__ import annotations

import tracemalloc
import zlib

import pytest

from shakehands.protocol.client import ClientProtocol
from shakehands.protocol.connection import Connection, Role, State
from shakehands.protocol.deflate import (
    DeflateOptions,
    PerMessageDeflate,
    client_accept,
    client_offer,
    compression_options,
    parse_extensions,
    server_negotiate,
)
from shakehands.protocol.errors import (
    InvalidPayload,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
)
from shakehands.protocol.frames import Opcode
from shakehands.protocol.handshake import build_accept_response
from shakehands.protocol.server import ServerProtocol

from .helpers import masked, read_frames, read_response, request_bytes, sent, sent_frames
from .test_connection import assert_failed

DEFAULT = DeflateOptions()
FULL = DeflateOptions(server_max_window_bits=15, client_max_window_bits=15)


def negotiate(offer: str, options: DeflateOptions = DEFAULT) -> str | None:
    result = server_negotiate([offer], options)
    return None if result is None else result[0]


# ---------------------------------------------------------------------------------------------
# Server side negotiation (RFC 7692 §7.1)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        ("permessage-deflate", "permessage-deflate; server_max_window_bits=12"),
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
        ),
        (
            "permessage-deflate; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10",
        ),
        (
            "permessage-deflate; client_max_window_bits=15",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
        ),
        (
            "permessage-deflate; server_max_window_bits=9",
            "permessage-deflate; server_max_window_bits=9",
        ),
        (
            "permessage-deflate; server_max_window_bits=15",
            "permessage-deflate; server_max_window_bits=12",
        ),
        (
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12",
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=12",
        ),
        (
            'permessage-deflate; server_max_window_bits="10"',
            "permessage-deflate; server_max_window_bits=10",
        ),
        (
            "PerMessage-Deflate; Server_Max_Window_Bits=8",
            "permessage-deflate; server_max_window_bits=8",
        ),
    ],
)
def test_server_answers_offer(offer: str, answer: str) -> None:
    assert negotiate(offer) == answer


def test_server_with_full_window_sends_minimal_answer() -> None:
    assert negotiate("permessage-deflate", FULL) == "permessage-deflate"
    assert negotiate("permessage-deflate; client_max_window_bits", FULL) == "permessage-deflate"


def test_server_options_impose_no_context_takeover() -> None:
    options = DeflateOptions(server_no_context_takeover=True, client_no_context_takeover=True)
    assert negotiate("permessage-deflate", options) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=12"
    )


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_max_window_bits",  # value required
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=08",
        "permessage-deflate; server_max_window_bits=abc",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; client_max_window_bits=100",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=yes",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; unknown_param",
        "permessage-deflate; mux=1",
        "x-webkit-deflate-frame",
        "deflate-stream",
    ],
)
def test_server_declines_bad_offer(offer: str) -> None:
    assert negotiate(offer) is None


def test_server_takes_first_acceptable_of_several_offers() -> None:
    header = (
        "permessage-deflate; server_max_window_bits=99, "
        "permessage-deflate; client_no_context_takeover; client_max_window_bits=9, "
        "permessage-deflate"
    )
    result = server_negotiate([header], DEFAULT)
    assert result is not None
    answer, codec = result
    assert answer == (
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=12; "
        "client_max_window_bits=9"
    )
    assert codec.remote_no_context_takeover and not codec.local_no_context_takeover
    assert codec.remote_max_window_bits == 9 and codec.local_max_window_bits == 12


def test_offers_in_several_headers() -> None:
    result = server_negotiate(["foo", "permessage-deflate; server_max_window_bits=10"], DEFAULT)
    assert result is not None and result[0] == "permessage-deflate; server_max_window_bits=10"


@pytest.mark.parametrize(
    "header",
    ["permessage-deflate; =1", "bad header", 'permessage-deflate; a="b c"', "permessage-deflate;;"],
)
def test_malformed_extensions_header(header: str) -> None:
    with pytest.raises(NegotiationError):
        parse_extensions([header])


def test_parse_extensions() -> None:
    assert parse_extensions(['a; x=1; y="2", b', " , c"]) == [
        ("a", [("x", "1"), ("y", "2")]),
        ("b", []),
        ("c", []),
    ]


def test_server_handshake_declines_bad_offer_and_answers_101() -> None:
    server = ServerProtocol(compression=DEFAULT)
    server.receive_data(
        request_bytes(extra=[("Sec-WebSocket-Extensions", "permessage-deflate; bogus=1")])
    )
    server.events_received()
    response = server.accept()
    assert response.status == 101
    assert "Sec-WebSocket-Extensions" not in response.headers
    server.send_response(response)
    assert server.deflate is None


def test_server_handshake_malformed_header_is_400() -> None:
    server = ServerProtocol(compression=DEFAULT)
    server.receive_data(request_bytes(extra=[("Sec-WebSocket-Extensions", "permessage-deflate;;")]))
    server.events_received()
    response = server.accept()
    server.send_response(response)
    answer = read_response(sent(server))
    assert answer.status == 400
    assert b"Sec-WebSocket-Extensions" in answer.body or b"extension" in answer.body


def test_server_without_compression_ignores_offers() -> None:
    server = ServerProtocol(compression=None)
    server.receive_data(request_bytes(extra=[("Sec-WebSocket-Extensions", "permessage-deflate")]))
    server.events_received()
    response = server.accept()
    assert "Sec-WebSocket-Extensions" not in response.headers


# ---------------------------------------------------------------------------------------------
# Client side (RFC 7692 §5, §7.1)
# ---------------------------------------------------------------------------------------------


def test_client_offer() -> None:
    assert client_offer(DEFAULT) == (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    )
    assert client_offer(FULL) == "permessage-deflate"
    assert client_offer(
        DeflateOptions(
            server_max_window_bits=15,
            client_max_window_bits=None,
            server_no_context_takeover=True,
            client_no_context_takeover=True,
        )
    ) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "client_max_window_bits"
    )


@pytest.mark.parametrize(
    ("answer", "local_bits", "remote_bits", "local_nct", "remote_nct"),
    [
        ("permessage-deflate; server_max_window_bits=12", 12, 12, False, False),
        # Above our offer of 12: we keep to 12, which is within what the server allows.
        (
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=15",
            12,
            12,
            False,
            False,
        ),
        (
            "permessage-deflate; server_max_window_bits=9; client_max_window_bits=10",
            10,
            9,
            False,
            False,
        ),
        (
            "permessage-deflate; server_max_window_bits=12; server_no_context_takeover; "
            "client_no_context_takeover",
            12,
            12,
            True,
            True,
        ),
    ],
)
def test_client_accepts_valid_answer(
    answer: str, local_bits: int, remote_bits: int, local_nct: bool, remote_nct: bool
) -> None:
    codec = client_accept([answer], DEFAULT)
    assert codec is not None
    assert codec.local_max_window_bits == local_bits
    assert codec.remote_max_window_bits == remote_bits
    assert codec.local_no_context_takeover is local_nct
    assert codec.remote_no_context_takeover is remote_nct


def test_client_without_answer_has_no_compression() -> None:
    assert client_accept([], DEFAULT) is None


@pytest.mark.parametrize(
    ("answer", "options"),
    [
        ("x-other", DEFAULT),
        ("permessage-deflate, permessage-deflate", DEFAULT),
        ("permessage-deflate; server_max_window_bits=13", DEFAULT),  # larger than offered
        ("permessage-deflate; client_max_window_bits", DEFAULT),  # value required in a response
        ("permessage-deflate; client_max_window_bits=10", FULL),  # not offered (§7.1.2.2)
        ("permessage-deflate; server_max_window_bits=7", DEFAULT),
        ("permessage-deflate; unknown=1", DEFAULT),
        ("permessage-deflate; server_no_context_takeover=1", DEFAULT),
        (
            "permessage-deflate; server_max_window_bits=15",
            DeflateOptions(server_no_context_takeover=True, server_max_window_bits=15),
        ),  # requested server_no_context_takeover ignored
    ],
)
def test_client_fails_on_bad_answer(answer: str, options: DeflateOptions) -> None:
    with pytest.raises(NegotiationError):
        client_accept([answer], options)


def test_client_handshake_fails_on_bad_answer() -> None:
    client = ClientProtocol("ws://example.com/", compression=DEFAULT)
    client.send_request()
    client.data_to_send()
    response = build_accept_response(client.key, extensions="permessage-deflate; foo=1")
    client.receive_data(response.serialize())
    assert client.events_received() == []
    assert isinstance(client.handshake_exc, NegotiationError)
    assert client.state is State.CLOSED


def test_compression_options() -> None:
    assert compression_options(None) is None
    assert compression_options("deflate") == DeflateOptions()
    options = DeflateOptions(memory_level=9)
    assert compression_options(options) is options
    with pytest.raises(ValueError):
        compression_options("gzip")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server_max_window_bits": 7},
        {"server_max_window_bits": 16},
        {"client_max_window_bits": 20},
        {"memory_level": 0},
        {"compress_level": 10},
    ],
)
def test_bad_deflate_options(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        DeflateOptions(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# End to end through both protocol objects
# ---------------------------------------------------------------------------------------------


def handshake(
    client_options: DeflateOptions | None = DEFAULT, server_options: DeflateOptions | None = DEFAULT
) -> tuple[ClientProtocol, ServerProtocol]:
    client = ClientProtocol("ws://localhost/", compression=client_options)
    server = ServerProtocol(compression=server_options)
    client.send_request()
    server.receive_data(sent(client))
    server.send_response(server.accept())
    client.receive_data(sent(server))
    assert client.state is State.OPEN and server.state is State.OPEN
    client.events_received()
    server.events_received()
    return client, server


@pytest.mark.parametrize(
    "client_options",
    [
        DEFAULT,
        FULL,
        DeflateOptions(server_max_window_bits=8, client_max_window_bits=8),
        DeflateOptions(server_no_context_takeover=True, client_no_context_takeover=True),
        DeflateOptions(client_max_window_bits=None),
    ],
)
@pytest.mark.parametrize("server_options", [DEFAULT, FULL, DeflateOptions(memory_level=1)])
def test_round_trip_matrix(client_options: DeflateOptions, server_options: DeflateOptions) -> None:
    client, server = handshake(client_options, server_options)
    assert client.deflate is not None and server.deflate is not None
    text = "Le cœur a ses raisons que la raison ne connaît point. " * 200
    data = bytes(range(256)) * 50
    for _ in range(3):
        client.send_text(text)
        client.send_binary(data)
        frames = read_frames(sent(client))
        assert all(f.rsv == 0b100 for f in frames)
        assert len(frames[0].payload) < len(text.encode()) * 3 // 4
        server.receive_data(b"".join(_reframe(frames, mask=True)))
        assert server.events_received() == [text, data]
        server.send_text(text)
        server.send_binary(data)
        client.receive_data(sent(server))
        assert client.events_received() == [text, data]


def _reframe(frames: list, *, mask: bool) -> list[bytes]:
    from shakehands.protocol.frames import serialize_frame

    return [
        serialize_frame(f.opcode, f.payload, fin=f.fin, rsv1=bool(f.rsv & 4), mask=mask)
        for f in frames
    ]


def test_context_takeover_shrinks_repeated_messages() -> None:
    client, server = handshake()
    message = "A sentence long enough to be worth a back-reference across messages. " * 4
    server.send_text(message)
    server.send_text(message)
    first, second = sent_frames(server)
    assert len(second.payload) < len(first.payload) // 3
    client.receive_data(b"".join(_reframe([first, second], mask=False)))
    assert client.events_received() == [message, message]


def test_no_context_takeover_resets_each_message() -> None:
    options = DeflateOptions(server_no_context_takeover=True)
    client, server = handshake(options, options)
    message = "A sentence long enough to be worth a back-reference across messages. " * 4
    server.send_text(message)
    server.send_text(message)
    first, second = sent_frames(server)
    assert first.payload == second.payload
    client.receive_data(b"".join(_reframe([first, second], mask=False)))
    assert client.events_received() == [message, message]


def test_compress_false_sends_plain_frame() -> None:
    client, server = handshake()
    server.send_binary(b"already compressed jpeg bytes", compress=False)
    server.send_binary(b"compress me " * 10)
    plain, squeezed = sent_frames(server)
    assert plain.rsv == 0 and plain.payload == b"already compressed jpeg bytes"
    assert squeezed.rsv == 0b100
    client.receive_data(b"".join(_reframe([plain, squeezed], mask=False)))
    assert client.events_received() == [b"already compressed jpeg bytes", b"compress me " * 10]


def test_fragmented_message_rsv1_on_first_frame_only() -> None:
    client, server = handshake()
    server.send_fragment("first part, ", fin=False)
    server.send_fragment("second part, ", fin=False)
    server.send_fragment("last part", fin=True)
    frames = sent_frames(server)
    assert [f.rsv for f in frames] == [0b100, 0, 0]
    assert [f.fin for f in frames] == [False, False, True]
    client.receive_data(b"".join(_reframe(frames, mask=False)))
    assert client.events_received() == ["first part, second part, last part"]


def test_without_negotiation_nothing_is_compressed() -> None:
    client, server = handshake(DEFAULT, None)
    assert client.deflate is None and server.deflate is None
    client.send_text("hello " * 100)
    (frame,) = read_frames(sent(client))
    assert frame.rsv == 0 and frame.payload == ("hello " * 100).encode()


def test_rsv1_without_negotiation_is_1002() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_data(masked(Opcode.TEXT, b"x", rsv1=True))
    assert_failed(conn, 1002, ProtocolError)


def _deflating(role: Role, **kwargs: object) -> Connection:
    conn = Connection(role, **kwargs)  # type: ignore[arg-type]
    conn.use_deflate(
        PerMessageDeflate(
            local_no_context_takeover=False,
            remote_no_context_takeover=False,
            local_max_window_bits=15,
            remote_max_window_bits=15,
        )
    )
    return conn


def deflate_raw(data: bytes, wbits: int = -15) -> bytes:
    compressor = zlib.compressobj(wbits=wbits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def test_rsv1_on_continuation_is_1002() -> None:
    conn = _deflating(Role.SERVER)
    payload = deflate_raw(b"hello")
    conn.receive_data(
        masked(Opcode.TEXT, payload[:2], fin=False, rsv1=True)
        + masked(Opcode.CONT, payload[2:], rsv1=True)
    )
    assert_failed(conn, 1002, ProtocolError)


def test_invalid_deflate_data_is_1007() -> None:
    conn = _deflating(Role.SERVER)
    conn.receive_data(masked(Opcode.BINARY, b"\xff\xff\xff\xff garbage", rsv1=True))
    assert_failed(conn, 1007, InvalidPayload)


def test_invalid_utf8_inside_compressed_text_is_1007() -> None:
    conn = _deflating(Role.SERVER)
    conn.receive_data(masked(Opcode.TEXT, deflate_raw(b"ok \xc3\x28 bad"), rsv1=True))
    assert_failed(conn, 1007, InvalidPayload)


def test_compressed_message_at_the_limit_passes() -> None:
    conn = _deflating(Role.SERVER, max_message_size=1000)
    conn.receive_data(masked(Opcode.BINARY, deflate_raw(b"\x00" * 1000), rsv1=True))
    assert conn.events_received() == [b"\x00" * 1000]
    conn.receive_data(masked(Opcode.BINARY, deflate_raw(b"\x00" * 1001), rsv1=True))
    assert_failed(conn, 1009, PayloadTooBig)


def test_limit_counts_inflated_bytes_across_fragments() -> None:
    conn = _deflating(Role.SERVER, max_message_size=1000)
    payload = deflate_raw(b"\x00" * 1500)
    conn.receive_data(masked(Opcode.BINARY, payload[:3], fin=False, rsv1=True))
    conn.receive_data(masked(Opcode.CONT, payload[3:]))
    assert_failed(conn, 1009, PayloadTooBig)


def _bomb(size: int) -> bytes:
    """``size`` zero bytes deflated (ratio ~1000:1), without materialising them."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(size >> 20)]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH)[:-4])
    return b"".join(parts)


@pytest.mark.parametrize("limit", [64 * 1024, 1024 * 1024])
def test_deflate_bomb_fails_with_1009_without_allocating(limit: int) -> None:
    """A 256 KiB message that inflates to 256 MiB: 1009, and never more than the limit held."""
    bomb = _bomb(256 << 20)
    assert len(bomb) < 300_000
    frame = masked(Opcode.BINARY, bomb, rsv1=True)
    conn = _deflating(Role.SERVER, max_message_size=limit)
    tracemalloc.start()
    try:
        # As a socket delivers it: reads of 64 KiB.
        for offset in range(0, len(frame), 65536):
            conn.receive_data(frame[offset : offset + 65536])
            if conn.failure is not None:
                break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Beyond the limit: one 64 KiB inflate step and a few copies of one read (buffering,
    # unmasking), never the 256 MiB of the bomb.
    assert peak < limit + 512 * 1024, peak
    assert_failed(conn, 1009, PayloadTooBig)
    assert conn.events_received() == []


def test_deflate_bomb_split_into_small_reads_is_caught_early() -> None:
    bomb = _bomb(64 << 20)
    frame = masked(Opcode.BINARY, bomb, rsv1=True)
    conn = _deflating(Role.SERVER, max_message_size=1 << 20)
    consumed = 0
    for i in range(0, len(frame), 4096):
        conn.receive_data(frame[i : i + 4096])
        consumed = i + 4096
        if conn.failure is not None:
            break
    assert isinstance(conn.failure, PayloadTooBig)
    # 1 MiB of zeros is ~1 KiB deflated: the failure comes within the first few reads.
    assert consumed <= 4 * 4096


def test_client_inflates_server_bomb_bounded() -> None:
    bomb = _bomb(32 << 20)
    conn = _deflating(Role.CLIENT, max_message_size=1 << 20)
    from shakehands.protocol.frames import serialize_frame

    conn.receive_data(serialize_frame(Opcode.TEXT, bomb, rsv1=True))
    assert conn.events_received() == []
    assert isinstance(conn.failure, PayloadTooBig)
    assert conn.failure.code == 1009


def test_window_8_compresses_validly() -> None:
    """zlib cannot deflate with a 256-byte window; what we send must still inflate with one."""
    codec = PerMessageDeflate(
        local_no_context_takeover=False,
        remote_no_context_takeover=False,
        local_max_window_bits=8,
        remote_max_window_bits=8,
    )
    message = bytes(range(256)) * 64 + b"tail" * 1000
    compressed = codec.compress(message, fin=True)
    inflater = zlib.decompressobj(-8)
    assert inflater.decompress(compressed + b"\x00\x00\xff\xff") == message
    assert len(compressed) < len(message)
