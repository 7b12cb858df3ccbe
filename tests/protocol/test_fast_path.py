"""The receive fast path (whole simple data frames) against the general parser.

``Connection._parse`` takes whole, unfragmented, uncompressed text/binary frames in one go (in C
when ``shakehands._speedups`` has ``parse_data_frames``, else in Python) and everything else
through the general, incremental parser. Whatever the path, the same bytes must give the same
events, the same failure (close code) and the same bytes to send: this module feeds random
streams of frames, in random chunkings, to a connection that can use the fast path and to one
that cannot, and compares them.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shakehands.protocol import connection as connection_module
from shakehands.protocol import reader as reader_module
from shakehands.protocol.connection import Connection, Role
from shakehands.protocol.frames import serialize_close, serialize_frame

FAST_C = connection_module._parse_data_frames


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    return serialize_frame(opcode, payload, fin=fin, mask=masked, mask_key=b"\x01\x02\x03\x04")


# A frame of the stream: mostly simple data frames, with everything that must leave the fast
# path mixed in (fragments, control frames, bad UTF-8, RSV bits, unmasked frames).
payload_sizes = st.sampled_from([0, 1, 5, 125, 126, 127, 300, 65535, 65536, 70000])
simple_binary = payload_sizes.map(
    lambda n: frame(2, bytes(range(256)) * (n // 256) + bytes(n % 256))
)
simple_text = st.text(max_size=200).map(lambda t: frame(1, t.encode("utf-8")))
other_frames = st.sampled_from(
    [
        frame(1, b"\xff\xfe"),  # invalid UTF-8: 1007
        frame(1, b"ab\xed\xa0\x80"),  # a surrogate: 1007
        frame(2, b"part1", fin=False) + frame(0, b"part2"),  # fragmented message
        frame(1, "é".encode()[:1], fin=False) + frame(0, "é".encode()[1:]),
        frame(9, b"ping"),
        frame(10, b"pong"),
        frame(2, b"unmasked", masked=False),  # 1002 from a server's point of view
        bytes([0xC2, 0x80 | 3]) + b"\x01\x02\x03\x04" + b"abc",  # RSV1 without extension: 1002
        frame(8, serialize_close(1000, "bye")),
    ]
)
streams = st.lists(
    st.one_of(simple_binary, simple_text, simple_binary, other_frames), min_size=1, max_size=12
)


def run(
    stream: bytes, cuts: list[int], fast: bool, **kw: int
) -> tuple[list[object], int | None, bytes]:
    """Feed ``stream`` cut at ``cuts``; return (events, failure code, bytes out).

    ``fast`` false takes the C fast path away (the Python one remains).
    """
    with pytest.MonkeyPatch.context() as patch:
        if not fast:
            patch.setattr(reader_module, "_parse_data_frames", None)
        conn = Connection(Role.SERVER, max_message_size=kw.get("max_message_size"))
        events: list[object] = []
        last = 0
        for cut in [*sorted(set(cuts)), len(stream)]:
            conn.receive_data(stream[last:cut])
            events.extend(conn.events_received())
            last = cut
        failure = conn.failure.code if conn.failure is not None else None
        return events, failure, b"".join(conn.data_to_send())


@settings(max_examples=150, deadline=None)
@given(frames=streams, cuts=st.lists(st.integers(min_value=0, max_value=300000), max_size=6))
def test_c_fast_path_matches_python(frames: list[bytes], cuts: list[int]) -> None:
    if FAST_C is None:
        pytest.skip("shakehands._speedups.parse_data_frames is not built")
    stream = b"".join(frames)
    cuts = [c for c in cuts if c < len(stream)]
    assert run(stream, cuts, True) == run(stream, cuts, False)


@settings(max_examples=100, deadline=None)
@given(frames=streams, cuts=st.lists(st.integers(min_value=0, max_value=300000), max_size=6))
def test_any_chunking_gives_the_same_answer(frames: list[bytes], cuts: list[int]) -> None:
    # Whole stream at once (fast path for everything simple) vs. the same bytes cut anywhere.
    stream = b"".join(frames)
    cuts = [c for c in cuts if c < len(stream)]
    assert run(stream, cuts, True) == run(stream, [], True)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("size", [125, 126, 65535, 65536])
def test_message_size_limit_is_exact(size: int, fast: bool) -> None:
    at_limit = frame(2, b"x" * size)
    over = frame(2, b"x" * (size + 1))
    events, failure, _ = run(at_limit, [], fast, max_message_size=size)
    assert events == [b"x" * size] and failure is None
    events, failure, out = run(over, [], fast, max_message_size=size)
    assert events == [] and failure == 1009
    assert out[0] == 0x88 and out[2:4] == (1009).to_bytes(2, "big")  # a close frame, 1009


def test_c_function_stops_before_what_it_does_not_handle() -> None:
    if FAST_C is None:
        pytest.skip("shakehands._speedups.parse_data_frames is not built")
    events: list[object] = []
    good = frame(2, b"abc")
    stream = good + frame(1, "hé".encode()) + frame(9, b"p") + good
    pos = FAST_C(memoryview(stream), 0, 0x80, -1, events)
    assert events == [b"abc", "hé"]
    assert pos == len(good) + len(frame(1, "hé".encode()))
    # An incomplete frame, a frame over the limit, bad UTF-8, a wrong mask bit: nothing taken.
    for data, limit, mask_bit in [
        (good[:-1], -1, 0x80),
        (good, 2, 0x80),
        (frame(1, b"\xff"), -1, 0x80),
        (good, -1, 0),
    ]:
        events = []
        assert FAST_C(memoryview(data), 0, mask_bit, limit, events) == 0
        assert events == []


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_build_frame_matches_serialize_frame(size: int, kind: type) -> None:
    from shakehands.protocol import frames

    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = frames.serialize_frame(2, payload)
    assert frames.build_frame_python(0x82, kind(payload)) == expected
    assert frames.build_frame(0x82, kind(payload)) == expected  # C when built


def test_join_masked_matches_python() -> None:
    from shakehands.protocol import masking

    data = bytes(range(256)) * 40
    parts: list[tuple[masking.BytesLike, bytes | None]] = [
        (data[:5], b"abcd"),
        (b"", None),
        (data[5:1005], None),
        (memoryview(data)[1005:2000], b"\x01\x02\x03\x04"),
        (bytearray(data[2000:]), b"wxyz"),
    ]
    expected = b"".join(d if m is None else masking.apply_mask_python(d, m) for d, m in parts)
    assert masking.join_masked_python(parts) == expected
    assert masking.join_masked(parts) == expected  # C when built
    with pytest.raises(ValueError):
        masking.join_masked([(b"a", b"abc")])
