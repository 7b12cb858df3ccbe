"""What the compiled data path and pure Python must do alike in both APIs (callback and
coroutine): each test runs four times, through the ``api_impl`` fixture, against an echo
server (:class:`~.paths_helpers.Served`) and a raw client on 127.0.0.1.

The compiled path takes whole simple frames only and hands everything else to the core in
order: each test mixes what it takes with what it must hand over (pings between messages,
fragments, limits, invalid UTF-8, closing). The tests of one API's own rules are in
``test_callback_paths.py`` and ``test_coroutine_paths.py``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

import shakehands

from ..helpers import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, close_payload, frame
from .paths_helpers import Served, read_data, without_pongs

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def served(api_impl: tuple[str, str]) -> Served:
    return Served(*api_impl)


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_echo_of_every_kind_and_size(served: Served, compression: str | None) -> None:
    """One at a time, then all in flight (answered in order), with or without
    permessage-deflate negotiated: the callback API's compiled path takes them all (see
    test_deflate_paths.py), the coroutine API's hands compressed ones to the core."""
    messages: list[str | bytes] = [
        "hello",
        "",
        b"",
        "滴水之恩当以涌泉相报 🎉",
        b"\x00\xff" * 63,  # 126 bytes: 16-bit length
        "x" * 70_000,  # 64-bit length
        b"y" * (2**20),  # exactly max_message_size (1 MiB)
        bytes(range(256)) * 1200,  # 300 KiB
    ]
    async with (
        served.serve() as server,
        shakehands.connect(served.uri(server), compression=compression) as ws,
    ):
        for message in messages:
            await ws.send(message)
            assert await ws.recv() == message
        for message in messages:
            await ws.send(message)
        for message in messages:
            assert await ws.recv() == message
        if served.api == "coroutine" and compression is not None:
            fast = getattr(served.handler.connections[0], "_fast", None)
            assert fast is None or not fast.active
        else:
            served.check()
    assert served.messages == messages * 2
    served.assert_ended(1000)


async def test_many_messages_in_one_read(served: Served) -> None:
    """More than batch_limit messages in one write: all delivered, in order, in batches."""
    count = 5000
    async with served.raw_client(roomy=True) as client:
        client.send(b"".join(frame(OP_TEXT, f"m{i}".encode()) for i in range(count)))
        frames = await read_data(client, count)
        assert frames == [(OP_TEXT, f"m{i}".encode()) for i in range(count)]
        assert served.messages == [f"m{i}" for i in range(count)]
        served.check()
        await client.close()


async def test_message_split_at_every_byte_boundary(served: Served) -> None:
    """A stream of two messages and a ping, cut in two at every byte, on one connection."""
    text = "héllo".encode()
    binary = bytes(range(200))  # a 16-bit length
    async with served.raw_client() as client:
        stream = frame(OP_TEXT, text) + frame(OP_BINARY, binary) + frame(OP_PING, b"pp")
        for cut in range(1, len(stream)):
            client.send(stream[:cut])
            await client.writer.drain()
            await asyncio.sleep(0.002)  # most likely two reads
            client.send(stream[cut:])
            frames = await read_data(client, 3)
            # The pong may leave before the echoes of the messages read with the ping.
            assert without_pongs(frames) == [(OP_TEXT, text), (OP_BINARY, binary)], cut
            assert (OP_PONG, b"pp") in frames, cut
        assert len(served.messages) == 2 * (len(stream) - 1)
        served.check()
        await client.close()


async def test_large_message_split_in_its_header_and_payload(served: Served) -> None:
    """A 64-bit-length frame cut inside its header, its mask and its payload."""
    payload = os.urandom(100_000)
    data = frame(OP_BINARY, payload)
    async with served.raw_client() as client:
        for cut in [*range(1, 15), 1000, 65_536, len(data) - 1]:
            client.send(data[:cut])
            await client.writer.drain()
            await asyncio.sleep(0.002)
            client.send(data[cut:])
            assert await read_data(client, 1) == [(OP_BINARY, payload)], cut
        served.check()
        await client.close()


async def test_fragments_interleaved_with_pings(served: Served) -> None:
    async with served.raw_client() as client:
        client.send(
            frame(OP_TEXT, b"before")
            + frame(OP_TEXT, b"ab", fin=False)
            + frame(OP_PING, b"p1")
            + frame(OP_CONT, b"cd", fin=False)
            + frame(OP_PING, b"p2")
            + frame(OP_CONT, b"ef")
            + frame(OP_BINARY, b"after")
        )
        frames = await read_data(client, 5)
        # Pongs answer at once; the messages come back in order around them.
        assert [f for f in frames if f[0] == OP_PONG] == [(OP_PONG, b"p1"), (OP_PONG, b"p2")]
        assert without_pongs(frames) == [
            (OP_TEXT, b"before"),
            (OP_TEXT, b"abcdef"),
            (OP_BINARY, b"after"),
        ]
        # The same, one frame per read.
        for part in [
            frame(OP_TEXT, b"gh", fin=False),
            frame(OP_PING, b"p3"),
            frame(OP_CONT, b"ij"),
            frame(OP_TEXT, b"next"),
        ]:
            client.send(part)
            await client.writer.drain()
            await asyncio.sleep(0.002)
        assert await read_data(client, 3) == [
            (OP_PONG, b"p3"),
            (OP_TEXT, b"ghij"),
            (OP_TEXT, b"next"),
        ]
        assert served.messages == ["before", "abcdef", b"after", "ghij", "next"]
        served.check()
        await client.close()


# ---------------------------------------------------------------------------------------------
# Limits and errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"max_message_size": 1000}, {"max_message_size": None, "max_frame_size": 1000}],
    ids=["max_message_size", "max_frame_size"],
)
async def test_oversize_fails_with_1009(served: Served, options: dict[str, Any]) -> None:
    async with served.raw_client(**options) as client:
        client.send(frame(OP_BINARY, b"a" * 1000))  # at the limit: taken
        assert await read_data(client, 1) == [(OP_BINARY, b"a" * 1000)]
        client.send(frame(OP_TEXT, b"ok") + frame(OP_BINARY, b"b" * 1001))
        assert await read_data(client, 1) == [(OP_TEXT, b"ok")]
        code, _ = await client.read_close()
        assert code == 1009
        await client.read_eof()
        await client.close()
    assert served.messages == [b"a" * 1000, "ok"]


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"ok\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf"],
    ids=["invalid-byte", "truncated", "surrogate", "overlong"],
)
async def test_invalid_utf8_fails_with_1007(served: Served, bad: bytes) -> None:
    """Messages before the bad one are answered first; then 1007; nothing after is read."""
    async with served.raw_client() as client:
        client.send(
            frame(OP_TEXT, b"one")
            + frame(OP_BINARY, b"two")
            + frame(OP_TEXT, bad)
            + frame(OP_TEXT, b"never")
        )
        assert await read_data(client, 2) == [(OP_TEXT, b"one"), (OP_BINARY, b"two")]
        code, _ = await client.read_close()
        assert code == 1007
        await client.read_eof()
        await client.close()
        await served.wait_ended()
    assert served.messages == ["one", b"two"]
    served.assert_ended(1006)


async def test_unmasked_frame_fails_with_1002(served: Served) -> None:
    async with served.raw_client() as client:
        client.send(frame(OP_TEXT, b"fine") + frame(OP_TEXT, b"bare", mask=False))
        assert await read_data(client, 1) == [(OP_TEXT, b"fine")]
        code, _ = await client.read_close()
        assert code == 1002
        await client.close()


# ---------------------------------------------------------------------------------------------
# Closing
# ---------------------------------------------------------------------------------------------


async def test_client_close_after_messages_in_the_same_read(served: Served) -> None:
    """The answers to the messages read with the close frame leave before our close frame."""
    async with served.raw_client() as client:
        client.send(
            frame(OP_TEXT, b"x")
            + frame(OP_BINARY, b"y")
            + frame(OP_CLOSE, close_payload(1000, "bye"))
        )
        assert await read_data(client, 2) == [(OP_TEXT, b"x"), (OP_BINARY, b"y")]
        assert await client.read_close() == (1000, "")
        await client.read_eof()
        await client.close()
        await served.wait_ended()
    assert served.messages == ["x", b"y"]
    served.assert_ended(1000, "bye")


async def test_abrupt_disconnect_mid_frame(served: Served) -> None:
    async with served.raw_client() as client:
        data = frame(OP_BINARY, b"z" * 5000)
        client.send(frame(OP_TEXT, b"whole") + data[:3000])
        assert await read_data(client, 1) == [(OP_TEXT, b"whole")]
        client.abort()
        await served.wait_ended()
    assert served.messages == ["whole"]
    served.assert_ended(1006)
