"""What the data-path tests of both APIs share: a raw client's frames, and :class:`Served`,
an echo server of the callback API (a :class:`Recorder` listener) or of the coroutine API (an
:class:`Echo` handler) behind one interface, so that a test of what both paths must do alike
runs once per API and implementation (the ``api_impl`` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import shakehands
from shakehands.asyncio import _fastcoro, _fastpath

from ..asyncio.asyncio_helpers import RawClient, wait_for_condition
from ..helpers import OP_PONG


async def open_raw(port: int) -> RawClient:
    client = await RawClient.open(port)
    await client.handshake(port)
    return client


async def read_data(client: RawClient, count: int) -> list[tuple[int, bytes]]:
    """The next ``count`` frames, as ``(opcode, payload)``."""
    frames = []
    for _ in range(count):
        fin, opcode, payload = await client.read_frame()
        assert fin
        frames.append((opcode, payload))
    return frames


def without_pongs(frames: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """The data frames: a pong may leave before the answers to messages read with its ping
    (the core queues it as it parses), so tests compare the order of the rest."""
    return [f for f in frames if f[0] != OP_PONG]


class Recorder(shakehands.Listener):
    """Records every callback; echoes messages unless ``echo`` is false."""

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.opened: list[shakehands.CallbackConnection] = []
        self.messages: list[str | bytes] = []
        self.closed: list[tuple[int, str]] = []

    def on_open(self, ws: shakehands.CallbackConnection) -> None:
        self.opened.append(ws)

    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        self.messages.append(message)
        if self.echo:
            ws.send(message)

    def on_close(self, ws: shakehands.CallbackConnection, code: int, reason: str) -> None:
        self.closed.append((code, reason))


class Echo:
    """An echo handler that records what it received and how the connection ended."""

    def __init__(self) -> None:
        self.connections: list[shakehands.ServerConnection] = []
        self.messages: list[str | bytes] = []
        self.ended: list[BaseException | None] = []

    async def __call__(self, ws: shakehands.ServerConnection) -> None:
        self.connections.append(ws)
        try:
            async for message in ws:
                self.messages.append(message)
                await ws.send(message)
        except shakehands.ConnectionClosed as exc:
            self.ended.append(exc)
            raise
        self.ended.append(None)


def check_fast(ws: Any, compiled_class: type, impl: str) -> None:
    """``ws`` is of the implementation under test, and on the compiled path it is back on the
    fast path (the core was between messages)."""
    compiled = isinstance(ws, compiled_class)
    assert compiled is (impl == "compiled")
    if compiled:
        assert ws._fast.active


class Served:
    """An echo server of ``api`` ("callback" or "coroutine") on the ``impl`` data path
    ("compiled" or "python": set by the ``api_impl`` fixture)."""

    def __init__(self, api: str, impl: str) -> None:
        self.api = api
        self.impl = impl
        self.listener = Recorder()
        self.handler = Echo()

    @property
    def messages(self) -> list[str | bytes]:
        """The messages the server received, in order."""
        return self.listener.messages if self.api == "callback" else self.handler.messages

    @asynccontextmanager
    async def serve(self, *, roomy: bool = False, **options: Any) -> AsyncIterator[Any]:
        """The running server (``roomy``: the coroutine API's inbox holds 10 000 messages, so
        that a burst is read without pausing)."""
        if self.api == "callback":
            async with shakehands.serve_callbacks(self.listener, "127.0.0.1", 0, **options) as s:
                yield s
        else:
            if roomy:
                options["max_queue"] = 10_000
            async with shakehands.serve(self.handler, "127.0.0.1", 0, **options) as s:
                yield s

    @asynccontextmanager
    async def raw_client(self, **options: Any) -> AsyncIterator[RawClient]:
        """A raw client, past its handshake, of the server :meth:`serve` runs."""
        async with self.serve(**options) as server:
            yield await open_raw(server.port)

    def uri(self, server: Any) -> str:
        """The URI of the running ``server``."""
        return f"ws://127.0.0.1:{server.port}/"

    def check(self) -> None:
        """The last connection is of the implementation under test, back on the fast path."""
        if self.api == "callback":
            check_fast(self.listener.opened[-1], _fastpath.FastCallbackConnection, self.impl)
        else:
            check_fast(self.handler.connections[-1], _fastcoro.FastServerConnection, self.impl)

    async def wait_ended(self) -> None:
        """Until the server has seen the connection end."""
        await wait_for_condition(
            lambda: bool(self.listener.closed if self.api == "callback" else self.handler.ended)
        )

    def assert_ended(self, code: int, reason: str = "") -> None:
        """The connection ended once, with ``code`` and ``reason`` received from the client
        (1006 and "": none): ``on_close``'s arguments; for the handler, no exception after a
        1000, else a ConnectionClosedError with that code and reason."""
        if self.api == "callback":
            assert self.listener.closed == [(code, reason)]
        elif code == 1000:
            assert self.handler.ended == [None]
        else:
            [ended] = self.handler.ended
            assert isinstance(ended, shakehands.ConnectionClosedError)
            assert (ended.code, ended.reason) == (code, reason)
