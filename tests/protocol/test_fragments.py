"""Messages in many fragments (security finding F1): same results, memory bounded by the size.

A peer may send a message as a million one-byte fragments. The connection must deliver exactly
what it would for the same message in one frame (``bytes`` for binary, ``str`` for text), fail
invalid UTF-8 at the fragment that makes it invalid, and hold no more than a small factor of the
payload counted against ``max_message_size`` while the message is incomplete: not a Python object
per fragment (once about 160 bytes per payload byte).
"""

from __future__ import annotations

import asyncio
import os
import random
import tracemalloc
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence

import pytest

from shakehands.protocol.connection import Connection, Role
from shakehands.protocol.deflate import PerMessageDeflate
from shakehands.protocol.errors import InvalidPayload, PayloadTooBig
from shakehands.protocol.frames import Opcode, serialize_frame
from shakehands.protocol.messages import awith_fin, with_fin

from .helpers import feed_chunks
from .test_connection import assert_failed

KiB = 1024
MASK = b"\x5a\x17\xc3\x9e"

TEXT = "ascii, é, €, 😀, \U0010ffff and \ud7ff\ue000 " * 3


def fragment_frames(
    opcode: int,
    payload: bytes,
    sizes: Sequence[int],
    *,
    role: Role = Role.SERVER,
    rsv1: bool = False,
) -> list[bytes]:
    """``payload`` as one message in fragments of the given sizes (cycled), one frame each."""
    frames = []
    pos = 0
    i = 0
    while True:
        size = sizes[i % len(sizes)]
        i += 1
        part = payload[pos : pos + size]
        pos += size
        fin = pos >= len(payload)
        frames.append(
            serialize_frame(
                opcode if len(frames) == 0 else Opcode.CONT,
                part,
                fin=fin,
                rsv1=rsv1 and len(frames) == 0,
                mask=role is Role.SERVER,
                mask_key=MASK if role is Role.SERVER else None,
            )
        )
        if fin:
            return frames


def one_byte_fragments(opcode: int, payload: bytes) -> tuple[bytes, bytes]:
    """``payload`` as masked one-byte fragments: all but the last, and the last (FIN) one."""
    key0 = MASK[0]  # a one-byte payload is masked with the key's first byte only
    first = bytes((opcode, 0x81)) + MASK + bytes((payload[0] ^ key0,))
    head = b"\x00\x81" + MASK
    body = b"".join(head + bytes((b ^ key0,)) for b in payload[1:-1])
    last = b"\x80\x81" + MASK + bytes((payload[-1] ^ key0,))
    return first + body, last


def deflate_raw(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def deflating(role: Role = Role.SERVER, **kwargs: object) -> Connection:
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


def receive(conn: Connection, data: bytes, read: int | None) -> list[object]:
    """Feed ``data`` whole (``read`` None) or in reads of ``read`` bytes; return the events."""
    if read is None:
        conn.receive_data(data)
    else:
        feed_chunks(conn, data, read)
    assert conn.failure is None, conn.failure
    return conn.events_received()


# Fragment sizes around the size from which a part is kept whole (16 KiB) rather than copied
# into the message's buffer, alone and mixed, so that small runs and kept parts alternate.
SIZES = {
    "1": [1],
    "7": [7],
    "4KiB": [4 * KiB],
    "16KiB-1": [16 * KiB - 1],
    "16KiB": [16 * KiB],
    "70000": [70000],
    "mixed": [1, 3, 20000, 5, 16 * KiB, 1, 1, 70000, 0, 2, 16 * KiB - 1],
}
READS = {"whole": None, "64KiB": 64 * KiB, "5000": 5000, "1000": 1000}


@pytest.mark.parametrize("read", list(READS.values()), ids=list(READS))
@pytest.mark.parametrize("sizes", list(SIZES.values()), ids=list(SIZES))
@pytest.mark.parametrize("role", list(Role))
def test_fragmented_binary(role: Role, sizes: list[int], read: int | None) -> None:
    payload = os.urandom(200_000 if min(sizes) > 1 else 30_000)
    data = b"".join(fragment_frames(Opcode.BINARY, payload, sizes, role=role))
    events = receive(Connection(role), data, read)
    assert events == [payload]
    assert type(events[0]) is bytes


@pytest.mark.parametrize("read", list(READS.values()), ids=list(READS))
@pytest.mark.parametrize("sizes", list(SIZES.values()), ids=list(SIZES))
@pytest.mark.parametrize("role", list(Role))
def test_fragmented_text(role: Role, sizes: list[int], read: int | None) -> None:
    text = TEXT * (6000 if min(sizes) > 1 else 500)
    data = b"".join(fragment_frames(Opcode.TEXT, text.encode(), sizes, role=role))
    events = receive(Connection(role), data, read)
    assert events == [text]
    assert type(events[0]) is str


@pytest.mark.parametrize("input_type", [bytes, bytearray, memoryview])
def test_fragmented_binary_from_any_buffer(input_type: type) -> None:
    # Reads that are not immutable bytes are copied, never kept by reference.
    payload = os.urandom(150_000)
    data = b"".join(fragment_frames(Opcode.BINARY, payload, [1, 20000, 3, 40000]))
    conn = Connection(Role.SERVER)
    for i in range(0, len(data), 30000):
        buf = bytearray(data[i : i + 30000])
        conn.receive_data(input_type(buf))
        buf[:] = bytes(len(buf))  # the caller reuses its buffer
    assert conn.events_received() == [payload]


@pytest.mark.parametrize("seed", range(20))
def test_random_fragmentation(seed: int) -> None:
    rng = random.Random(seed)
    text = "".join(rng.choice(TEXT) for _ in range(rng.randrange(1, 40000)))
    payload = rng.randbytes(rng.randrange(1, 100_000))
    sizes = [rng.choice([0, 1, 2, 3, 100, 16 * KiB, 30000]) for _ in range(20)]
    sizes[0] = max(sizes[0], 1)
    data = b"".join(
        fragment_frames(Opcode.TEXT, text.encode(), sizes)
        + [serialize_frame(Opcode.PING, b"keepalive", mask=True)]
        + fragment_frames(Opcode.BINARY, payload, sizes[::-1])
    )
    # A ping in between two messages; one inside a message is in test_connection.py.
    conn = Connection(Role.SERVER)
    read = rng.choice([1, 7, 1000, 65536, len(data)])
    feed_chunks(conn, data, read)
    events = conn.events_received()
    assert events[0] == text and events[2] == payload
    assert conn.failure is None


def test_multibyte_characters_one_byte_per_fragment() -> None:
    text = TEXT * 50
    first, last = one_byte_fragments(Opcode.TEXT, text.encode())
    conn = Connection(Role.SERVER)
    feed_chunks(conn, first + last, 4096)
    assert conn.events_received() == [text]


def test_large_fragment_ending_inside_a_character() -> None:
    # A kept (large) part followed by small ones that complete its last character, and back.
    encoded = ("x" * 20000 + "😀").encode()
    cut = len(encoded) - 2
    text = ("x" * 20000 + "😀") * 3
    parts = [encoded[:cut], encoded[cut : cut + 1], encoded[cut + 1 :] + encoded] + [encoded]
    data = masked_fragments(Opcode.TEXT, parts)
    for read in (None, 1, 1000):
        assert receive(Connection(Role.SERVER), data, read) == [text]


def masked_fragments(opcode: int, parts: Sequence[bytes]) -> bytes:
    frames = [
        serialize_frame(
            opcode if i == 0 else Opcode.CONT,
            part,
            fin=i == len(parts) - 1,
            mask=True,
            mask_key=MASK,
        )
        for i, part in enumerate(parts)
    ]
    return b"".join(frames)


@pytest.mark.parametrize(
    ("valid", "bad", "invalid_at"),
    [
        ("é€😀" * 300, b"\xff", 0),
        ("é€😀" * 300, b"\xc0\xaf", 0),
        ("é€😀" * 300, b"\xed\xa0\x80", 1),  # a surrogate: fails on its second byte
        ("é€😀" * 300, b"\xf4\x90", 1),
        ("é€😀" * 300, b"\xe2\x82\x28", 2),
        ("x" * 20000, b"\xe2\x28", 1),
    ],
)
def test_invalid_utf8_fails_at_its_fragment(valid: str, bad: bytes, invalid_at: int) -> None:
    # One byte per fragment, or the valid prefix as one large fragment: the connection fails
    # when the fragment carrying the byte that makes it invalid is fed, not later.
    for split in ("one byte", "large prefix"):
        prefix = valid.encode()
        parts = [prefix[i : i + 1] for i in range(len(prefix))] if split == "one byte" else [prefix]
        parts += [bad[i : i + 1] for i in range(len(bad))] + [b"tail"]
        frames = [
            serialize_frame(
                Opcode.TEXT if i == 0 else Opcode.CONT,
                part,
                fin=i == len(parts) - 1,
                mask=True,
                mask_key=MASK,
            )
            for i, part in enumerate(parts)
        ]
        conn = Connection(Role.SERVER)
        fails_at = len(parts) - 1 - len(bad) + invalid_at
        for i, frame in enumerate(frames):
            conn.receive_data(frame)
            if i < fails_at:
                assert conn.failure is None, (split, i)
            else:
                break
        assert i == fails_at
        assert conn.events_received() == []
        assert_failed(conn, 1007, InvalidPayload)


def test_text_ending_inside_a_character_after_many_fragments() -> None:
    encoded = ("é€" * 1000).encode() + b"\xf0\x9f\x98"
    first, last = one_byte_fragments(Opcode.TEXT, encoded)
    conn = Connection(Role.SERVER)
    conn.receive_data(first + last)
    assert conn.events_received() == []
    assert_failed(conn, 1007, InvalidPayload)


@pytest.mark.parametrize("opcode", [Opcode.BINARY, Opcode.TEXT])
@pytest.mark.parametrize("sizes", [[1], [3, 1, 1000], [50_000]], ids=["1", "mixed", "50000"])
def test_fragmented_compressed_message(opcode: int, sizes: list[int]) -> None:
    # Inflated pieces both small (one-byte compressed fragments) and large (a few compressed
    # bytes inflating to more than 16 KiB: long runs), in one message.
    text = (TEXT * 20 + "z" * 40000 + TEXT) * 8
    original = text.encode() if opcode == Opcode.TEXT else os.urandom(5000) + text.encode()
    compressed = deflate_raw(original)
    data = b"".join(fragment_frames(opcode, compressed, sizes, rsv1=True))
    conn = deflating()
    feed_chunks(conn, data, 8192)
    assert conn.failure is None, conn.failure
    expected = text if opcode == Opcode.TEXT else original
    assert conn.events_received() == [expected]
    # Context takeover: the next message, one byte per fragment, still inflates correctly.
    compressor = zlib.compressobj(wbits=-15)
    compressor.compress(original)
    compressor.flush(zlib.Z_SYNC_FLUSH)
    second = (compressor.compress(original[:3000]) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    first_frames, last_frame = one_byte_fragments(opcode | 0x40, second)
    conn.receive_data(first_frames + last_frame)
    assert conn.failure is None, conn.failure
    second_expected = original[:3000] if opcode == Opcode.BINARY else original[:3000].decode()
    assert conn.events_received() == [second_expected]


def test_fragmented_compressed_message_over_the_limit() -> None:
    compressed = deflate_raw(b"a" * 20000)
    first, last = one_byte_fragments(Opcode.BINARY | 0x40, compressed)
    conn = deflating(max_message_size=10000)
    conn.receive_data(first + last)
    assert_failed(conn, 1009, PayloadTooBig)


def test_one_byte_fragments_at_the_limit() -> None:
    payload = os.urandom(4096)
    first, last = one_byte_fragments(Opcode.BINARY, payload + b"!")
    conn = Connection(Role.SERVER, max_message_size=4096)
    conn.receive_data(first)
    assert conn.failure is None
    conn.receive_data(last)
    assert_failed(conn, 1009, PayloadTooBig)


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------

#: Fragments fed with tracemalloc on (which makes each of them about 25 times slower).
FRAGMENTS = {
    "binary": 100_000,
    "text-ascii": 40_000,
    "text-multibyte": 40_000,
    "compressed-binary": 40_000,
    "compressed-text": 40_000,
}


def held_by_unfinished_message(conn: Connection, first: bytes) -> int:
    """Traced bytes allocated while ``first`` (a message minus its last frame) was fed in
    reads of 64 KiB, and still held."""
    reads = [first[i : i + 64 * KiB] for i in range(0, len(first), 64 * KiB)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for read in reads:
            conn.receive_data(read)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert conn.failure is None, conn.failure
    assert conn.events_received() == []
    return held


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(FRAGMENTS))
def test_memory_of_one_byte_fragments_is_bounded_by_the_payload(kind: str) -> None:
    opcode = Opcode.TEXT if "text" in kind else Opcode.BINARY
    n = FRAGMENTS[kind]
    if kind == "binary":
        payload = os.urandom(n)
    elif kind == "text-multibyte":
        payload = ("é€😀" * n)[: n // 3].encode()
    else:
        payload = ("lorem ipsum %d " * (n // 8) % tuple(range(n // 8))).encode()[:n]
    size = len(payload)
    wire = payload
    if kind.startswith("compressed"):
        # Random bytes do not compress: the inflated size is about the compressed one.
        payload = os.urandom(n) if opcode == Opcode.BINARY else payload
        size = len(payload)
        wire = deflate_raw(payload)
        opcode |= 0x40
    conn = deflating() if kind.startswith("compressed") else Connection(Role.SERVER)
    first, last = one_byte_fragments(opcode, wire)
    held = held_by_unfinished_message(conn, first)
    # Before the fix: about 160 bytes per fragment (16 MB for 100 000).
    print(f"\n[{kind}] {len(wire)} fragments, {size} B of payload: {held} B held")
    assert held < 2 * size + 64 * KiB
    conn.receive_data(last)
    expected: str | bytes = payload.decode() if opcode & 0x0F == Opcode.TEXT else payload
    assert conn.events_received() == [expected]


# with_fin / awith_fin: the look-ahead every front end's send uses for a message's fragments.


def _fragment_source() -> Iterator[str]:
    yield "a"
    yield "b"
    yield "c"


async def _async_fragment_source(pieces: Sequence[str]) -> AsyncIterator[str]:
    for piece in pieces:
        yield piece


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        ([], []),
        (["only"], [("only", True)]),
        (["a", "b", "c"], [("a", False), ("b", False), ("c", True)]),
    ],
)
def test_with_fin_marks_only_the_last_fragment(
    pieces: list[str], expected: list[tuple[str, bool]]
) -> None:
    assert list(with_fin(pieces)) == expected

    async def collect(source: Iterable[str] | AsyncIterable[str]) -> list[tuple[str, bool]]:
        return [item async for item in awith_fin(source)]

    assert asyncio.run(collect(pieces)) == expected
    assert asyncio.run(collect(_async_fragment_source(pieces))) == expected


def test_with_fin_looks_one_ahead_only() -> None:
    """A fragment is yielded once the next one is known, not later: a send writes each
    fragment before the iterable makes the one after next."""
    source = _fragment_source()
    pairs = with_fin(source)
    assert next(pairs) == ("a", False)
    assert next(source) == "c"  # "b" was taken to know that "a" is not the last
    assert next(pairs) == ("b", True)
    assert list(pairs) == []


def test_with_fin_passes_the_iterables_error_on() -> None:
    def failing() -> Iterator[str]:
        yield "a"
        raise ValueError("boom")

    pairs = with_fin(failing())
    with pytest.raises(ValueError, match="boom"):
        next(pairs)
