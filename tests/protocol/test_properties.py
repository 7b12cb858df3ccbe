"""Property-based tests: round trips, chunking invariance, and robustness against any input."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shakehands.protocol.client import ClientProtocol
from shakehands.protocol.connection import Close, Connection, Ping, Pong, Role, State
from shakehands.protocol.errors import InvalidHandshake, ProtocolError
from shakehands.protocol.frames import (
    Opcode,
    is_valid_close_code,
    parse_close,
    serialize_close,
    serialize_frame,
)
from shakehands.protocol.handshake import Request, Response, build_accept_response
from shakehands.protocol.server import ServerProtocol

from .helpers import WireFrame, read_frames, read_response, request_bytes

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

mask_keys = st.binary(min_size=4, max_size=4)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut ``data`` at the given positions (taken modulo its length, deduplicated)."""
    if not data:
        return [data]
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def comparable(frames: list[WireFrame]) -> list[WireFrame]:
    """Frames with close reasons dropped: the code is the verdict, the reason is prose."""
    return [replace(f, payload=f.payload[:2]) if f.opcode == Opcode.CLOSE else f for f in frames]


def check_close_frames(frames: list[WireFrame]) -> None:
    for frame in frames:
        if frame.opcode == Opcode.CLOSE:
            assert len(frame.payload) <= 125
            if frame.payload:
                code, _ = parse_close(frame.payload)  # valid code, valid UTF-8
                assert is_valid_close_code(code)


# ---------------------------------------------------------------------------------------------
# Single frames
# ---------------------------------------------------------------------------------------------


@st.composite
def frames(draw: st.DrawFn) -> tuple[int, bytes, bool, bool, bool, bytes | None]:
    opcode = draw(st.sampled_from(list(Opcode)))
    control = opcode >= 8
    payload = draw(st.binary(max_size=125 if control else 4096))
    fin = True if control else draw(st.booleans())
    rsv1 = False if control else draw(st.booleans())
    mask = draw(st.booleans())
    key = draw(st.none() | mask_keys) if mask else None
    return opcode, payload, fin, rsv1, mask, key


@PROPERTY_SETTINGS
@given(frames())
def test_serialize_then_read_frame(frame: tuple[int, bytes, bool, bool, bool, bytes | None]):
    opcode, payload, fin, rsv1, mask, key = frame
    data = serialize_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=mask, mask_key=key)
    (read,) = read_frames(data)
    assert read.opcode == opcode
    assert read.payload == payload
    assert read.fin is fin
    assert read.rsv == (4 if rsv1 else 0)
    assert read.masked is mask
    if key is not None:
        assert read.mask_key == key
    expected_header = 2 + (0 if len(payload) < 126 else 2 if len(payload) < 65536 else 8)
    assert len(data) == expected_header + (4 if mask else 0) + len(payload)


@st.composite
def data_messages(draw: st.DrawFn) -> tuple[int, bytes, bool]:
    opcode = draw(st.sampled_from([Opcode.TEXT, Opcode.BINARY]))
    if opcode == Opcode.TEXT:
        payload = draw(st.text(max_size=1000)).encode("utf-8", "surrogatepass")
        # Lone surrogates are not valid UTF-8: keep only real text.
        payload = payload.decode("utf-8", "ignore").encode()
    else:
        payload = draw(st.binary(max_size=4096))
    return opcode, payload, draw(st.booleans())


@PROPERTY_SETTINGS
@given(data_messages(), st.booleans(), mask_keys)
def test_engine_parses_any_serialized_message(
    message: tuple[int, bytes, bool], to_server: bool, key: bytes
) -> None:
    opcode, payload, fin = message
    conn = Connection(Role.SERVER if to_server else Role.CLIENT)
    data = serialize_frame(opcode, payload, fin=fin, mask=to_server, mask_key=key)
    if not fin:
        data += serialize_frame(Opcode.CONT, b"", mask=to_server, mask_key=key)
    conn.receive_data(data)
    expected = payload.decode() if opcode == Opcode.TEXT else payload
    assert conn.events_received() == [expected]
    assert conn.failure is None


@PROPERTY_SETTINGS
@given(
    st.one_of(
        st.none(),
        st.sampled_from([1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999]),
        st.integers(3000, 4999),
    ),
    st.text(max_size=40),
)
def test_close_payload_round_trip(code: int | None, reason: str) -> None:
    reason = reason.encode("utf-8", "ignore").decode() if code is not None else ""
    try:
        payload = serialize_close(code, reason)
    except ValueError:
        assert len(reason.encode()) > 123
        return
    assert parse_close(payload) == ((code, reason) if code is not None else (1005, ""))


# ---------------------------------------------------------------------------------------------
# Valid streams cut anywhere
# ---------------------------------------------------------------------------------------------


@dataclass
class Stream:
    data: bytes
    expected: list[object]
    pongs: list[bytes]


@st.composite
def valid_streams(draw: st.DrawFn, to_server: bool) -> Stream:
    """A valid sequence of messages and control frames, and the events it should give."""
    data = bytearray()
    expected: list[object] = []
    pongs: list[bytes] = []

    def frame(opcode: int, payload: bytes, fin: bool = True) -> None:
        key = draw(mask_keys) if to_server else None
        data.extend(serialize_frame(opcode, payload, fin=fin, mask=to_server, mask_key=key))

    def control() -> None:
        payload = draw(st.binary(max_size=125))
        if draw(st.booleans()):
            frame(Opcode.PING, payload)
            expected.append(Ping(payload))
            pongs.append(payload)
        else:
            frame(Opcode.PONG, payload)
            expected.append(Pong(payload))

    kinds = st.sampled_from(["text", "binary", "fragmented", "control"])
    for kind in draw(st.lists(kinds, max_size=12)):
        if kind == "text":
            text = draw(st.text(max_size=300)).encode("utf-8", "ignore").decode()
            frame(Opcode.TEXT, text.encode())
            expected.append(text)
        elif kind == "binary":
            payload = draw(st.binary(max_size=2000))
            frame(Opcode.BINARY, payload)
            expected.append(payload)
        elif kind == "fragmented":
            is_text = draw(st.booleans())
            if is_text:
                text = draw(st.text(min_size=0, max_size=300)).encode("utf-8", "ignore").decode()
                payload = text.encode()
            else:
                payload = draw(st.binary(max_size=2000))
            # Cut the payload anywhere, even inside a UTF-8 sequence.
            pieces = split(payload, draw(st.lists(st.integers(0, 10_000), max_size=6)))
            controls_inside = []
            for i, piece in enumerate(pieces):
                opcode = (Opcode.TEXT if is_text else Opcode.BINARY) if i == 0 else Opcode.CONT
                frame(opcode, piece, fin=False)
                if draw(st.integers(0, 3)) == 0:
                    before = len(expected)
                    control()
                    controls_inside.extend(expected[before:])
                    del expected[before:]
            frame(Opcode.CONT, b"")
            expected.extend(controls_inside)
            expected.append(text if is_text else payload)
        else:
            control()
    if draw(st.booleans()):
        code = draw(st.sampled_from([None, 1000, 1001, 4000]))
        frame(Opcode.CLOSE, serialize_close(code, "bye" if code else ""))
        expected.append(Close(code if code is not None else 1005, "bye" if code else ""))
        # Anything after the close frame is ignored.
        data.extend(draw(st.binary(max_size=50)))
    return Stream(bytes(data), expected, pongs)


def run(
    role: Role, chunks: list[bytes], max_message_size: int | None = None
) -> tuple[Connection, list[object], list[WireFrame]]:
    conn = Connection(role, max_message_size=max_message_size)
    events: list[object] = []
    out = bytearray()
    for chunk in chunks:
        conn.receive_data(chunk)
        events.extend(conn.events_received())
        out.extend(b"".join(conn.data_to_send()))
    return conn, events, read_frames(bytes(out))


@PROPERTY_SETTINGS
@given(valid_streams(to_server=True), st.lists(st.integers(0, 100_000), max_size=40))
def test_server_stream_chunking_is_invisible(stream: Stream, cuts: list[int]) -> None:
    whole_conn, whole_events, whole_out = run(Role.SERVER, [stream.data])
    chunk_conn, chunk_events, chunk_out = run(Role.SERVER, split(stream.data, cuts))
    assert whole_events == stream.expected
    assert chunk_events == stream.expected
    assert whole_out == chunk_out
    assert whole_conn.failure is None and chunk_conn.failure is None
    assert whole_conn.state is chunk_conn.state
    pong_payloads = [f.payload for f in whole_out if f.opcode == Opcode.PONG]
    assert pong_payloads == stream.pongs
    assert not any(f.masked for f in whole_out)


@PROPERTY_SETTINGS
@given(valid_streams(to_server=False), st.lists(st.integers(0, 100_000), max_size=40))
def test_client_stream_chunking_is_invisible(stream: Stream, cuts: list[int]) -> None:
    _, whole_events, whole_out = run(Role.CLIENT, [stream.data])
    _, chunk_events, chunk_out = run(Role.CLIENT, split(stream.data, cuts))
    assert whole_events == chunk_events == stream.expected

    def strip(frames: list[WireFrame]) -> list[tuple[int, bool, bytes]]:
        # Client mask keys are random: compare what the frames carry.
        assert all(f.masked for f in frames)
        return [(f.opcode, f.fin, f.payload) for f in frames]

    assert strip(whole_out) == strip(chunk_out)


@PROPERTY_SETTINGS
@given(valid_streams(to_server=True))
def test_server_stream_bytewise(stream: Stream) -> None:
    _, events, out = run(Role.SERVER, [stream.data[i : i + 1] for i in range(len(stream.data))])
    assert events == stream.expected
    assert [f.payload for f in out if f.opcode == Opcode.PONG] == stream.pongs


# ---------------------------------------------------------------------------------------------
# Arbitrary bytes: nothing raises, failures are reported, close frames are valid
# ---------------------------------------------------------------------------------------------


@st.composite
def frame_like(draw: st.DrawFn) -> bytes:
    """Bytes shaped like a frame header with random bits, to go deeper than pure noise."""
    b0 = draw(
        st.integers(0, 255) | st.sampled_from([0x00, 0x01, 0x02, 0x80, 0x81, 0x82, 0x88, 0x89])
    )
    masked = draw(st.integers(0, 9)) > 0
    size = draw(st.sampled_from(["small", "16", "64"]))
    payload = draw(st.binary(max_size=300))
    if size == "small":
        header = bytes([b0, (0x80 if masked else 0) | draw(st.integers(0, 125))])
    elif size == "16":
        header = bytes([b0, (0x80 if masked else 0) | 126]) + draw(st.integers(0, 65535)).to_bytes(
            2, "big"
        )
    else:
        header = bytes([b0, (0x80 if masked else 0) | 127]) + draw(
            st.integers(0, 2**64 - 1)
        ).to_bytes(8, "big")
    if masked:
        header += draw(mask_keys)
    return header + payload


#: Well-formed client frames with random payloads: UTF-8 and fragmentation errors, not framing.
random_data_frames = st.builds(
    lambda opcode, payload, fin, key: serialize_frame(
        opcode, payload, fin=fin, mask=True, mask_key=key
    ),
    st.sampled_from([Opcode.TEXT, Opcode.CONT, Opcode.BINARY]),
    st.binary(max_size=40) | st.text(max_size=20).map(lambda t: t.encode("utf-8", "replace")),
    st.booleans(),
    mask_keys,
)

noisy_bytes = st.lists(
    st.one_of(
        st.binary(max_size=200),
        frame_like(),
        random_data_frames,
        st.sampled_from([b"\xed\xa0\x80", b"\xff"]),
    ),
    max_size=8,
).map(b"".join)


def check_after_any_input(conn: Connection, out: list[WireFrame]) -> None:
    check_close_frames(out)
    closes = [f for f in out if f.opcode == Opcode.CLOSE]
    assert len(closes) <= 1
    if conn.failure is not None:
        assert isinstance(conn.failure, ProtocolError)
        assert conn.failure.code in (1002, 1007, 1009)
        assert conn.state is State.CLOSED
        assert conn.close_expected() or conn.role is Role.CLIENT
        assert closes, "a failure must queue a close frame"
        assert int.from_bytes(closes[0].payload[:2], "big") == conn.failure.code
    if closes:
        assert conn.state is State.CLOSED
        assert all(f.masked is (conn.role is Role.CLIENT) for f in out)


@PROPERTY_SETTINGS
@given(noisy_bytes, st.lists(st.integers(0, 100_000), max_size=20))
def test_server_connection_never_raises(data: bytes, cuts: list[int]) -> None:
    whole, whole_events, whole_out = run(Role.SERVER, [data], 1000)
    chunked, chunk_events, chunk_out = run(Role.SERVER, split(data, cuts), 1000)
    check_after_any_input(whole, whole_out)
    check_after_any_input(chunked, chunk_out)
    event(f"failure {whole.failure.code if whole.failure else None}")
    # The verdict depends on the bytes, not on how they arrived.
    assert whole_events == chunk_events
    assert comparable(whole_out) == comparable(chunk_out)
    assert (whole.failure and whole.failure.code) == (chunked.failure and chunked.failure.code)
    assert whole.state is chunked.state


@PROPERTY_SETTINGS
@given(noisy_bytes, st.lists(st.integers(0, 100_000), max_size=20))
def test_client_connection_never_raises(data: bytes, cuts: list[int]) -> None:
    conn, _, out = run(Role.CLIENT, split(data, cuts), 1000)
    event(f"failure {conn.failure.code if conn.failure else None}")
    check_after_any_input(conn, out)


def drive_server(server: ServerProtocol, chunks: list[bytes]) -> tuple[list[object], bytes]:
    """Feed chunks as an I/O layer would: answer the request as soon as it is complete."""
    events: list[object] = []
    out = bytearray()
    for chunk in chunks:
        server.receive_data(chunk)
        new = server.events_received()
        events.extend(new)
        if any(isinstance(e, Request) for e in new) and server.state is State.CONNECTING:
            server.send_response(server.accept())
            events.extend(server.events_received())
        out.extend(b"".join(server.data_to_send()))
    return events, bytes(out)


def check_server_after_any_input(server: ServerProtocol, out: bytes) -> None:
    if server.response is None:
        assert out == b""
        assert server.state in (State.CONNECTING, State.CLOSED)
        return
    response = read_response(out)
    assert response.status == server.response.status
    if response.status == 101:
        assert server.handshake_exc is None
        frames = read_frames(response.rest)
        assert not any(f.masked for f in frames)
        check_close_frames(frames)
        if server.failure is not None:
            assert server.state is State.CLOSED
            assert frames and frames[-1].opcode == Opcode.CLOSE
    else:
        assert server.handshake_exc is not None
        assert server.handshake_exc.status == response.status
        assert 400 <= response.status < 500
        assert response.get("Connection") == "close"
        assert response.rest == b""
        assert server.state is State.CLOSED
        assert server.close_expected()


@st.composite
def request_like(draw: st.DrawFn) -> bytes:
    """A valid request, possibly corrupted, followed by noise or frames."""
    data = bytearray(
        request_bytes(
            extra=draw(
                st.lists(
                    st.tuples(
                        st.sampled_from(["Origin", "X-A", "Sec-WebSocket-Protocol", "Host"]),
                        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
                    ),
                    max_size=3,
                )
            )
        )
    )
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        if data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    return bytes(data) + draw(noisy_bytes)


@PROPERTY_SETTINGS
@given(
    st.one_of(st.binary(max_size=500), request_like(), noisy_bytes),
    st.lists(st.integers(0, 100_000), max_size=20),
)
def test_server_protocol_never_raises(data: bytes, cuts: list[int]) -> None:
    server = ServerProtocol(origins=None, subprotocols=["chat"])
    events, out = drive_server(server, split(data, cuts))
    check_server_after_any_input(server, out)
    event(f"response {server.response.status if server.response else None}")
    event(f"failure {server.failure.code if server.failure else None}")
    for item in events:
        assert isinstance(item, (Request, str, bytes, Ping, Pong, Close))
    if server.handshake_exc is not None:
        assert isinstance(server.handshake_exc, InvalidHandshake)
    server.receive_eof()
    assert server.state is State.CLOSED
    assert server.close_expected()


@PROPERTY_SETTINGS
@given(st.one_of(st.binary(max_size=500), noisy_bytes), st.lists(st.integers(0, 100_000)))
def test_server_protocol_whole_or_chunked_same_verdict(data: bytes, cuts: list[int]) -> None:
    data = request_bytes() + data
    a = ServerProtocol()
    b = ServerProtocol()
    events_a, out_a = drive_server(a, [data])
    events_b, out_b = drive_server(b, split(data, cuts))
    assert events_a == events_b
    response_a, response_b = read_response(out_a), read_response(out_b)
    assert (response_a.status, response_a.headers) == (response_b.status, response_b.headers)
    if response_a.status == 101:
        assert comparable(read_frames(response_a.rest)) == comparable(read_frames(response_b.rest))
    assert (a.failure and a.failure.code) == (b.failure and b.failure.code)


@PROPERTY_SETTINGS
@given(st.one_of(st.binary(max_size=500), noisy_bytes), st.lists(st.integers(0, 100_000)))
def test_client_protocol_never_raises(data: bytes, cuts: list[int]) -> None:
    client = ClientProtocol("ws://example.com/")
    prefix = build_accept_response(client.key).serialize() if cuts and cuts[0] % 2 else b""
    for chunk in split(prefix + data, cuts):
        client.receive_data(chunk)
    events = client.events_received()
    if client.handshake_exc is not None:
        assert isinstance(client.handshake_exc, InvalidHandshake)
        assert client.close_expected()
        assert events == []
    elif client.state is not State.CONNECTING:
        assert isinstance(events[0], Response)
    check_close_frames(read_frames(b"".join(client.data_to_send())))
    client.receive_eof()
    assert client.state is State.CLOSED
    assert client.close_expected()


@PROPERTY_SETTINGS
@given(
    st.lists(random_data_frames, max_size=10).map(b"".join),
    st.lists(st.integers(0, 100_000), max_size=20),
)
def test_server_random_data_frames_same_verdict(data: bytes, cuts: list[int]) -> None:
    whole, whole_events, whole_out = run(Role.SERVER, [data], 60)
    chunked, chunk_events, chunk_out = run(Role.SERVER, split(data, cuts), 60)
    check_after_any_input(whole, whole_out)
    check_after_any_input(chunked, chunk_out)
    event(f"failure {whole.failure.code if whole.failure else None}")
    assert whole_events == chunk_events
    assert comparable(whole_out) == comparable(chunk_out)
    assert (whole.failure and whole.failure.code) == (chunked.failure and chunked.failure.code)
