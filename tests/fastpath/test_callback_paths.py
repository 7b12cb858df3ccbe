"""The callback server's behaviour on both data paths: compiled (``shakehands._fastpath``) and
pure Python, through the ``impl`` fixture; real servers and raw clients on 127.0.0.1.

The compiled path takes whole simple frames only and hands everything else to the core in
order: each test mixes what it takes with what it must hand over (pings between messages,
fragments, limits, invalid UTF-8, closing) and checks that both paths answer alike.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from typing import Any

import pytest

import shakehands
from shakehands.asyncio import _fastpath
from shakehands.protocol.handshake import Request, RequestParser

from ..asyncio.asyncio_helpers import RawClient, wait_for_condition
from ..helpers import (
    HOST,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_payload,
    frame,
    make_key,
    upgrade_request,
)
from .paths_helpers import Recorder, check_fast, open_raw, read_data, without_pongs

pytestmark = pytest.mark.timeout(120)


def check_impl(impl: str, listener: Recorder) -> None:
    """The connection is of the implementation under test, back on the fast path."""
    check_fast(listener.opened[-1], _fastpath.FastCallbackConnection, impl)


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------


async def test_send_types_and_sends_outside_a_batch(impl: str) -> None:
    """bytearray and memoryview go as binary; a send from a timer (not during a batch) leaves
    at once; frames sent during one batch keep their order with a broadcast in between."""

    class Sender(Recorder):
        def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
            self.messages.append(message)
            if message == "types":
                ws.send(bytearray(b"ba"))
                ws.send(memoryview(b"xmvx")[1:3])
                ws.send("text", compress=False)
            elif message == "later":
                asyncio.get_running_loop().call_soon(ws.send, "from a timer")
            elif message == "order":
                ws.send("1")
                shakehands.broadcast([ws], "2")
                ws.send(b"3")

    listener = Sender()
    async with (
        shakehands.serve_callbacks(listener, HOST, 0) as server,
        shakehands.connect(f"ws://{HOST}:{server.port}/", compression=None) as ws,
    ):
        await ws.send("types")
        assert [await ws.recv() for _ in range(3)] == [b"ba", b"mv", "text"]
        await ws.send("later")
        assert await ws.recv() == "from a timer"
        await ws.send("order")
        assert [await ws.recv() for _ in range(3)] == ["1", "2", b"3"]
        check_impl(impl, listener)


# ---------------------------------------------------------------------------------------------
# Limits and errors
# ---------------------------------------------------------------------------------------------


async def test_fragmented_message_over_the_limit(impl: str) -> None:
    listener = Recorder()
    async with shakehands.serve_callbacks(listener, HOST, 0, max_message_size=1000) as server:
        client = await open_raw(server.port)
        client.send(frame(OP_TEXT, b"x" * 600, fin=False) + frame(OP_CONT, b"x" * 600))
        code, _ = await client.read_close()
        assert code == 1009
        await client.close()
    assert listener.messages == []


async def test_no_limit(impl: str) -> None:
    listener = Recorder()
    payload = os.urandom(3 * 2**20)
    async with (
        shakehands.serve_callbacks(listener, HOST, 0, max_message_size=None) as server,
        shakehands.connect(
            f"ws://{HOST}:{server.port}/", max_message_size=None, compression=None
        ) as ws,
    ):
        await ws.send(payload)
        assert await ws.recv() == payload
        check_impl(impl, listener)


async def test_invalid_utf8_at_the_end_of_a_large_frame(impl: str) -> None:
    """A large text frame arrives in parts (the compiled path reads it straight into its
    message) and ends with an invalid byte: 1007, nothing delivered."""
    listener = Recorder()
    data = frame(OP_TEXT, b"a" * 200_000 + b"\xff")
    async with shakehands.serve_callbacks(listener, HOST, 0) as server:
        client = await open_raw(server.port)
        client.send(data[:100_000])
        await client.writer.drain()
        await asyncio.sleep(0.01)
        client.send(data[100_000:])
        code, _ = await client.read_close()
        assert code == 1007
        await client.close()
    assert listener.messages == []


async def test_close_while_a_large_frame_arrives(impl: str) -> None:
    """The server closes while a large frame is half read: the core gets it as it came, so
    the message is delivered whole and the closing handshake completes."""
    listener = Recorder()
    payload = os.urandom(300_000)
    data = frame(OP_BINARY, payload)
    async with shakehands.serve_callbacks(listener, HOST, 0) as server:
        client = await open_raw(server.port)
        client.send(frame(OP_TEXT, b"hi"))
        assert await read_data(client, 1) == [(OP_TEXT, b"hi")]
        client.send(data[:150_000])
        await client.writer.drain()
        await asyncio.sleep(0.05)
        listener.opened[0].close(1001, "going away")
        assert await client.read_close() == (1001, "going away")
        client.send(data[150_000:] + frame(OP_CLOSE, close_payload(1000)))
        await client.read_eof()
        await client.close()
        await wait_for_condition(lambda: bool(listener.closed))
    assert listener.messages == ["hi", payload]
    assert listener.closed == [(1000, "")]


async def test_listener_error_fails_with_1011(impl: str, caplog: pytest.LogCaptureFixture) -> None:
    class Failing(Recorder):
        def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
            super().on_message(ws, message)
            if message == "boom":
                raise RuntimeError("boom")

    listener = Failing()
    with caplog.at_level(logging.ERROR, logger="shakehands.server"):
        async with shakehands.serve_callbacks(listener, HOST, 0) as server:
            client = await open_raw(server.port)
            client.send(frame(OP_TEXT, b"a") + frame(OP_TEXT, b"boom") + frame(OP_TEXT, b"b"))
            # The echoes sent before the error leave, then the close frame.
            assert await read_data(client, 2) == [(OP_TEXT, b"a"), (OP_TEXT, b"boom")]
            code, _ = await client.read_close()
            assert code == 1011
            await client.close()
    assert listener.messages == ["a", "boom"]
    assert any(r.getMessage() == "listener failed" and r.exc_info for r in caplog.records)


# ---------------------------------------------------------------------------------------------
# Closing
# ---------------------------------------------------------------------------------------------


async def test_server_close_in_on_message(impl: str) -> None:
    """ws.close() during a batch: the echoes before it leave first; the close frame follows;
    the client's answer ends the connection."""

    class Closer(Recorder):
        def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
            super().on_message(ws, message)
            if message == "bye":
                ws.close(1000, "done")
                with pytest.raises(shakehands.ConnectionClosed):
                    ws.send("too late")

    listener = Closer()
    async with shakehands.serve_callbacks(listener, HOST, 0) as server:
        client = await open_raw(server.port)
        client.send(frame(OP_TEXT, b"a") + frame(OP_TEXT, b"bye"))
        assert await read_data(client, 2) == [(OP_TEXT, b"a"), (OP_TEXT, b"bye")]
        assert await client.read_close() == (1000, "done")
        client.send(frame(OP_CLOSE, close_payload(1000)))
        await client.read_eof()
        await client.close()
        await wait_for_condition(lambda: bool(listener.closed))
    assert listener.closed == [(1000, "")]


# ---------------------------------------------------------------------------------------------
# The request, kept packed while nobody reads it (idle memory)
# ---------------------------------------------------------------------------------------------


class RequestReader(Recorder):
    """Answers each message with what ``ws.request`` and ``ws.context`` say."""

    def __init__(self) -> None:
        super().__init__(echo=False)
        self.requests: list[Request | None] = []

    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        request = ws.request
        self.requests.append(request)
        assert request is not None
        ws.context["count"] = ws.context.get("count", 0) + 1
        ws.send(f"{request.method} {request.target} {ws.context['count']}")


@pytest.mark.parametrize("hook", [False, True])
async def test_request_seen_later_is_the_request_received(impl: str, hook: bool) -> None:
    """Without hooks, the request is kept packed after the handshake and ``ws.request`` (read
    later, in ``on_message``) is a request equal to the one received: method, target, every
    header as sent and in order, the peer's address; the same object on every read, which
    holds ``ws.context``. With a ``process_request`` hook, ``ws.request`` is the very object
    the hook saw (never packed)."""
    listener = RequestReader()
    hooked: list[Request] = []
    options: dict[str, Any] = {}
    if hook:
        options["process_request"] = hooked.append  # returns None: go on
    async with shakehands.serve_callbacks(listener, HOST, 0, **options) as server:
        client = await RawClient.open(server.port)
        data = upgrade_request(
            server.port, "/room/1?x=%C3%A9", key=make_key(), extra=[("X-Who", "me: \tyou")]
        )
        client.send(data)
        status, _ = await client.read_head()
        assert status == 101
        await wait_for_condition(lambda: bool(listener.opened))
        ws = listener.opened[0]
        assert isinstance(ws.protocol._request, Request if hook else str)
        client.send_frame(OP_TEXT, b"one")
        client.send_frame(OP_TEXT, b"two")
        assert await read_data(client, 2) == [
            (OP_TEXT, b"GET /room/1?x=%C3%A9 1"),
            (OP_TEXT, b"GET /room/1?x=%C3%A9 2"),
        ]
        first, second = listener.requests
        assert first is second is ws.request
        expected = RequestParser().feed(data)
        assert expected is not None
        expected.remote_address = client.writer.get_extra_info("sockname")
        assert first == expected
        assert first is not None and first.headers.items() == expected.headers.items()
        assert first.remote_address == ws.remote_address
        assert first.context == {"count": 2}
        if hook:
            assert hooked == [first] and hooked[0] is first
        check_impl(impl, listener)
        await client.close()


# ---------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------


def test_no_speedups_selects_pure_python() -> None:
    code = (
        "from shakehands.asyncio import _fastpath; from shakehands.protocol import _accel;"
        "print(_fastpath.AVAILABLE, _fastpath.enabled, _accel.fastpath)"
    )
    env = {**os.environ, "SHAKEHANDS_NO_SPEEDUPS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False", "None"]


def test_on_uvloop() -> None:
    """uvloop picks the buffered read path too: the same exchanges on its loop."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        listener = Recorder()
        async with shakehands.serve_callbacks(listener, HOST, 0) as server:
            client = await open_raw(server.port)
            stream = frame(OP_TEXT, b"abc") + frame(OP_PING, b"p") + frame(OP_BINARY, b"d" * 300)
            for cut in range(1, len(stream)):
                client.send(stream[:cut])
                await client.writer.drain()
                await asyncio.sleep(0.002)
                client.send(stream[cut:])
                frames = await read_data(client, 3)
                assert without_pongs(frames) == [(OP_TEXT, b"abc"), (OP_BINARY, b"d" * 300)]
                assert (OP_PONG, b"p") in frames
            client.send(b"".join(frame(OP_BINARY, b"%d" % i) for i in range(3000)))
            assert await read_data(client, 3000) == [(OP_BINARY, b"%d" % i) for i in range(3000)]
            big = os.urandom(2**20)
            client.send(frame(OP_BINARY, big))
            assert await read_data(client, 1) == [(OP_BINARY, big)]
            assert isinstance(listener.opened[0], _fastpath.FastCallbackConnection)
            assert listener.opened[0]._fast.active  # type: ignore[attr-defined]
            await client.close()

    if not _fastpath.AVAILABLE:
        pytest.skip("shakehands._fastpath is not built")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
