"""permessage-deflate on both data paths of the callback server (the ``impl`` fixture).

The compiled path takes whole compressed frames too: one call to the negotiated extension's
``decode`` per message, one to its ``encode`` per ``send``; the extension object is the core's,
so context takeover carries across runs of the compiled path and of the core. A frame the
extension cannot decode (or whose text is not UTF-8, or that inflates over the limit) fails
the connection exactly as the core fails it. A raw client with its own zlib streams checks the
bytes on the wire: RSV1, the compressed payloads and the close codes.
"""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from typing import Any

import pytest

import shakehands
from shakehands.asyncio import _fastpath

from ..asyncio.asyncio_helpers import RawClient
from ..helpers import HOST, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, frame
from .test_callback_paths import Recorder, check_impl

pytestmark = pytest.mark.timeout(120)

RSV1 = 0x40
TAIL = b"\x00\x00\xff\xff"


class DeflateClient:
    """A raw client that negotiated permessage-deflate (15-bit windows both ways)."""

    def __init__(self, raw: RawClient, no_context_takeover: bool) -> None:
        self.raw = raw
        self.no_context_takeover = no_context_takeover
        self.compressor = zlib.compressobj(wbits=-15)
        self.decompressor = zlib.decompressobj(-15)

    @classmethod
    async def open(cls, port: int, *, no_context_takeover: bool = False) -> DeflateClient:
        raw = await RawClient.open(port)
        offer = "permessage-deflate"
        if no_context_takeover:
            offer += "; client_no_context_takeover; server_no_context_takeover"
        headers = await raw.handshake(port, extra=[("Sec-WebSocket-Extensions", offer)])
        answer = headers["sec-websocket-extensions"]
        assert answer.startswith("permessage-deflate"), answer
        assert ("server_no_context_takeover" in answer) is no_context_takeover
        return cls(raw, no_context_takeover)

    def compress(self, payload: bytes, *, fin: bool = True) -> bytes:
        data = self.compressor.compress(payload) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        if fin:
            assert data.endswith(TAIL)
            data = data[:-4]
            if self.no_context_takeover:
                self.compressor = zlib.compressobj(wbits=-15)
        return data

    def message(self, message: str | bytes) -> bytes:
        """One compressed frame carrying ``message``."""
        if isinstance(message, str):
            return frame(OP_TEXT | RSV1, self.compress(message.encode()))
        return frame(OP_BINARY | RSV1, self.compress(message))

    def send(self, data: bytes) -> None:
        self.raw.send(data)

    async def read(self) -> tuple[int, bool, bytes]:
        """The next frame from the server: ``(opcode, compressed, payload inflated)``."""
        reader = self.raw.reader
        b0, b1 = await reader.readexactly(2)
        assert b0 & 0x80 and not b1 & 0x80
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        payload = await reader.readexactly(length)
        compressed = bool(b0 & RSV1)
        if compressed:
            payload = self.decompressor.decompress(payload + TAIL)
        return b0 & 0x0F, compressed, payload

    async def read_messages(self, count: int) -> list[str | bytes]:
        """The next ``count`` data messages (pongs skipped), each checked to be compressed."""
        messages: list[str | bytes] = []
        while len(messages) < count:
            opcode, compressed, payload = await self.read()
            if opcode == OP_PONG:
                continue
            assert compressed, (opcode, payload[:40])
            assert opcode in (OP_TEXT, OP_BINARY)
            messages.append(payload.decode() if opcode == OP_TEXT else payload)
        return messages

    async def read_close(self) -> int:
        while True:
            opcode, _, payload = await self.read()
            if opcode == OP_CLOSE:
                return int(struct.unpack("!H", payload[:2])[0])
            assert opcode == OP_PONG, (opcode, payload[:40])

    async def close(self) -> None:
        await self.raw.close()


def context_takeover_ids(value: bool) -> str:
    return "no-context-takeover" if value else "context-takeover"


NCT = pytest.mark.parametrize("no_context_takeover", [False, True], ids=context_takeover_ids)


async def test_echo_of_every_kind_and_size_with_shakehands_client(impl: str) -> None:
    """Every kind and size, our client negotiating with default and no-takeover options."""
    messages: list[str | bytes] = [
        "hello",
        "",
        b"",
        "滴水之恩当以涌泉相报 🎉",
        b"\x00\xff" * 63,
        "x" * 70_000,
        b"y" * (2**20),  # inflates to exactly max_message_size (1 MiB)
        bytes(range(256)) * 1200,
    ]
    for options in [
        "deflate",
        shakehands.DeflateOptions(server_no_context_takeover=True, client_no_context_takeover=True),
    ]:
        listener = Recorder()
        async with (
            shakehands.serve_callbacks(listener, HOST, 0) as server,
            shakehands.connect(f"ws://{HOST}:{server.port}/", compression=options) as ws,
        ):
            for message in messages * 2:
                await ws.send(message)
                assert await ws.recv() == message
            check_impl(impl, listener)
        assert listener.messages == messages * 2
        assert listener.closed == [(1000, "")]


@NCT
async def test_many_compressed_messages_in_one_read(impl: str, no_context_takeover: bool) -> None:
    listener = Recorder()
    messages: list[str | bytes] = [f"message {i}" for i in range(50)] + [b"\x01" * 5000] * 3
    async with shakehands.serve_callbacks(listener, HOST, 0) as server:
        client = await DeflateClient.open(server.port, no_context_takeover=no_context_takeover)
        client.send(b"".join(client.message(m) for m in messages))
        assert await client.read_messages(len(messages)) == messages
        # An uncompressed frame is still a valid message with deflate negotiated.
        client.send(frame(OP_TEXT, b"plain") + client.message("after"))
        assert await client.read_messages(2) == ["plain", "after"]
        check_impl(impl, listener)
        await client.close()
    assert listener.messages == [*messages, "plain", "after"]


@NCT
@pytest.mark.parametrize(
    "bad",
    ["corrupt", "invalid-utf8", "oversize", "oversize-on-the-wire"],
)
async def test_bad_compressed_frame_after_valid_ones(
    impl: str, no_context_takeover: bool, bad: str
) -> None:
    """Messages before the bad frame are answered; then the core's close code; nothing after
    is read."""
    listener = Recorder()
    async with shakehands.serve_callbacks(
        listener, HOST, 0, max_message_size=10_000, max_frame_size=5_000
    ) as server:
        client = await DeflateClient.open(server.port, no_context_takeover=no_context_takeover)
        good = client.message("one") + client.message(b"two" * 100)
        if bad == "corrupt":
            bad_frame, code = frame(OP_BINARY | RSV1, b"\xff\xfe\xfd\xfc"), 1007
        elif bad == "invalid-utf8":
            bad_frame, code = frame(OP_TEXT | RSV1, client.compress(b"ok\xff")), 1007
        elif bad == "oversize":
            # 10 001 bytes inflated from a few dozen on the wire.
            bad_frame, code = client.message(b"a" * 10_001), 1009
        else:
            # Incompressible: over max_frame_size as sent, under max_message_size inflated.
            bad_frame, code = client.message(os.urandom(6_000)), 1009
            assert len(bad_frame) > 5_000
        client.send(good + bad_frame + client.message("never"))
        assert await client.read_messages(2) == ["one", b"two" * 100]
        assert await client.read_close() == code
        await client.raw.read_eof()
        await client.close()
    assert listener.messages == ["one", b"two" * 100]


@NCT
async def test_at_the_limit_after_valid_ones(impl: str, no_context_takeover: bool) -> None:
    """Inflating to exactly max_message_size is fine, on both sides of a core run."""
    listener = Recorder()
    async with shakehands.serve_callbacks(listener, HOST, 0, max_message_size=10_000) as server:
        client = await DeflateClient.open(server.port, no_context_takeover=no_context_takeover)
        client.send(client.message(b"a" * 10_000) + frame(OP_PING, b"p") + client.message("b"))
        assert await client.read_messages(2) == [b"a" * 10_000, "b"]
        check_impl(impl, listener)
        await client.close()


@NCT
async def test_context_takeover_across_compiled_and_core_runs(
    impl: str, no_context_takeover: bool
) -> None:
    """A compressed message (compiled path), a fragmented compressed message interleaved with
    a ping (the core's), then the same text again (compiled again; with context takeover its
    frame is back-references into the earlier messages). Both directions share one zlib
    stream each, so any message decoded or encoded with the wrong context fails."""
    listener = Recorder()
    text = "".join(f"{i * 7919 % 10007:05d} " for i in range(200))  # hardly repetitive
    async with shakehands.serve_callbacks(listener, HOST, 0) as server:
        client = await DeflateClient.open(server.port, no_context_takeover=no_context_takeover)
        for round in range(3):
            first = client.message(text)
            part1 = client.compress(text[:300].encode(), fin=False)
            part2 = client.compress(text[300:].encode())
            fragmented = (
                frame(OP_TEXT | RSV1, part1, fin=False)
                + frame(OP_PING, b"p")
                + frame(OP_CONT, part2)
            )
            again = client.message(text)
            if round == 0 and not no_context_takeover:
                assert len(again) < len(first) / 4  # back-references only
            for data in (first, fragmented, again):
                client.send(data)  # one read each, as far as the kernel goes
                await client.raw.writer.drain()
                await asyncio.sleep(0.002)
            assert await client.read_messages(3) == [text, text, text]
        check_impl(impl, listener)
        await client.close()
    assert listener.messages == [text] * 9


async def test_send_compress_false(impl: str) -> None:
    """``send(..., compress=False)`` leaves without RSV1, ``compress=True`` (the default) with;
    the server's compressor carries on across both."""

    class Sender(Recorder):
        def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
            self.messages.append(message)
            ws.send(message, compress=False)
            ws.send(message)
            ws.send(bytearray(b"ba"))
            ws.send(memoryview(b"xmvx")[1:3], compress=True)
            ws.send("text", compress=0)  # type: ignore[arg-type]  # any false value

    listener = Sender()
    async with shakehands.serve_callbacks(listener, HOST, 0) as server:
        client = await DeflateClient.open(server.port)
        for message in ("hello", b"bin" * 1000, "x" * 100_000):
            client.send(client.message(message))
            got = [await client.read() for _ in range(5)]
            kind = OP_TEXT if isinstance(message, str) else OP_BINARY
            raw = message.encode() if isinstance(message, str) else message
            assert got == [
                (kind, False, raw),
                (kind, True, raw),
                (OP_BINARY, True, b"ba"),
                (OP_BINARY, True, b"mv"),
                (OP_TEXT, False, b"text"),
            ]
        check_impl(impl, listener)
        await client.close()


async def test_compiled_path_takes_compressed_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the compiled path, compressed messages are not handed to the core, and the path
    stays on."""
    if not _fastpath.AVAILABLE:
        pytest.skip("shakehands._fastpath is not built (or SHAKEHANDS_NO_SPEEDUPS is set)")
    monkeypatch.setattr(_fastpath, "enabled", True)
    listener = Recorder()
    async with shakehands.serve_callbacks(listener, HOST, 0) as server:
        client = await DeflateClient.open(server.port)
        client.send(client.message("one"))
        assert await client.read_messages(1) == ["one"]
        handed: list[bytes] = []
        slow = _fastpath.FastCallbackConnection._slow_received

        def record(self: Any, data: bytes) -> None:
            handed.append(data)
            slow(self, data)

        monkeypatch.setattr(_fastpath.FastCallbackConnection, "_slow_received", record)
        client.send(client.message("two") + client.message(b"three"))
        assert await client.read_messages(2) == ["two", b"three"]
        assert handed == []
        check_impl("compiled", listener)
        await client.close()


@NCT
async def test_compressed_frame_larger_than_its_message(
    impl: str, no_context_takeover: bool
) -> None:
    """Incompressible data: the frame on the wire is over max_message_size, the message is
    not. The compiled path leaves it to the core (it buffers no more of a compressed frame
    than of a plain one), which inflates it and delivers it; the next one is compiled again."""
    listener = Recorder()
    payload = os.urandom(1000)
    async with shakehands.serve_callbacks(listener, HOST, 0, max_message_size=1000) as server:
        client = await DeflateClient.open(server.port, no_context_takeover=no_context_takeover)
        data = client.message(payload)
        assert len(data) > 1000 + 8
        client.send(client.message("a") + data + client.message("b"))
        assert await client.read_messages(3) == ["a", payload, "b"]
        check_impl(impl, listener)
        await client.close()
