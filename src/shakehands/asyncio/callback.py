"""The callback API: a :class:`Listener` is called for every connection event; no coroutine,
Future or task is created per message.

Incoming bytes are parsed in one go, every complete message is handed to
:meth:`Listener.on_message` in the same call, and whatever the listener sends meanwhile leaves in
a single socket write at the end of the batch. A read with more than
:attr:`CallbackConnection.batch_limit` messages (a flood of tiny ones) is delivered that many per
loop iteration, with reading from that peer paused until it is all delivered, so that other
connections are served in between. Backpressure: while the transport's write buffer
is above its high-water mark, reading from the peer is paused, so a peer that does not read what
it asked for cannot grow the server's memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Unpack

from ..protocol.connection import Close, Pong, State
from ..protocol.errors import CloseCode, ConnectionClosed
from ..protocol.handshake import Request
from ..protocol.messages import unsendable
from ..protocol.server import ServerProtocol
from ..router import Router, path_params_of
from .base import TransportProtocol, write_chunks
from .handshake import HANDSHAKE_SLOTS, ServerHandshake
from .server import (
    ServeContext,
    ServeOptions,
    Server,
    UnixServeOptions,
    split_server_options,
)

__all__ = [
    "Listener",
    "CallbackConnection",
    "RoutedListener",
    "serve_callbacks",
    "unix_serve_callbacks",
]

logger = logging.getLogger("shakehands.server")

_BytesLike = (bytes, bytearray, memoryview)

# What CallbackConnection._deliver did with a batch of events.
_DONE, _STOPPED, _FAILED = 0, 1, 2


class Listener:
    """Override the methods you need; one listener serves every connection of a server.

    Callbacks run on the event loop: they must not block. Per-connection state can live in
    ``ws.context``, a dictionary (what ``process_request`` put in ``request.context``).

    Example::

        class Echo(Listener):
            def on_message(self, ws, message):
                ws.send(message)
    """

    def on_open(self, ws: CallbackConnection) -> None:
        """The handshake is done; ``ws.request`` has the request."""

    def on_message(self, ws: CallbackConnection, message: str | bytes) -> None:
        """A message arrived: ``str`` for text, ``bytes`` for binary."""

    def on_close(self, ws: CallbackConnection, code: int, reason: str) -> None:
        """The connection closed; ``code`` 1006 means no close frame was received."""


class RoutedListener(Listener):
    """The listener of a :class:`~shakehands.Router` of listeners: each event goes to the
    listener of the route the connection matched (what ``serve_callbacks(router)`` runs)."""

    __slots__ = ("router",)

    def __init__(self, router: Router) -> None:
        for route in router.routes:
            if not isinstance(route.endpoint, Listener):
                raise TypeError(
                    f"route {route.pattern!r}: serve_callbacks routes to Listener objects, "
                    f"got {route.endpoint!r}"
                )
        #: The routes.
        self.router = router

    def on_open(self, ws: CallbackConnection) -> None:
        """Hand the event to the route's listener."""
        self.router.endpoint_for(ws.request).on_open(ws)

    def on_message(self, ws: CallbackConnection, message: str | bytes) -> None:
        """Hand the message to the route's listener."""
        self.router.endpoint_for(ws.request).on_message(ws, message)

    def on_close(self, ws: CallbackConnection, code: int, reason: str) -> None:
        """Hand the event to the route's listener."""
        self.router.endpoint_for(ws.request).on_close(ws, code, reason)


class CallbackConnection(ServerHandshake, TransportProtocol):
    """A server connection of the callback API: what the :class:`Listener` methods receive."""

    protocol: ServerProtocol

    __slots__ = (
        *HANDSHAKE_SLOTS,
        "listener",
        "_in_batch",
        "_opened",
        "_read_paused_for_write",
        "_backlog",
    )

    def __init__(self, server: Server[Any], listener: Listener) -> None:
        super().__init__(server.new_protocol(), server.config)
        self._init_handshake(server)
        self.listener = listener
        self._in_batch = False
        self._opened = False
        self._read_paused_for_write = False
        # The events of a large read not delivered yet, and where to go on (see batch_limit).
        self._backlog: tuple[list[Any], int] | None = None

    # -----------------------------------------------------------------------------------------
    # Transport events
    # -----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._register(transport)

    #: The most events handed to the listener in one step of the event loop. One socket read
    #: (up to 256 KiB) can hold 40 000 tiny messages, a hundred milliseconds of listener calls
    #: during which no other connection is served; beyond this many, the rest are delivered
    #: over the next loop iterations, this many at a time, and reading from this peer pauses
    #: until they are all delivered.
    batch_limit = 1024

    def data_received(self, data: bytes) -> None:
        if self._eof_sent:
            self._linger(len(data))  # the lingering close after a refusal or a failure
            return
        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        if events:
            if len(events) > self.batch_limit:
                # Pause reading (what comes next waits for these), and hold the close frame a
                # failure or the peer's close owes until the answers to these are queued.
                self.transport.pause_reading()
                self._hold_close = True
                self._backlog = (events, 0)
                self._deliver_backlog()
                return
            if self._deliver(events) == _FAILED:
                return
        out = protocol.data_to_send()
        if out:
            write_chunks(self.transport, out)
        if protocol.state is State.CLOSED:
            self._closing_handshake_done()

    def _deliver(self, events: list[Any]) -> int:
        """Hand ``events`` to the listener; whatever it sends leaves after the batch."""
        self._in_batch = True
        listener = self.listener
        try:
            for event in events:
                kind = type(event)
                if kind is str or kind is bytes:
                    listener.on_message(self, event)
                else:
                    self._on_other_event(event)
        except ConnectionClosed:
            # The listener sent on a connection the same batch closed: nothing to report.
            self._in_batch = False
            return _STOPPED
        except Exception:
            logger.exception("listener failed")
            self._in_batch = False
            self._fail(CloseCode.INTERNAL_ERROR, "")
            return _FAILED
        self._in_batch = False
        return _DONE

    def _deliver_backlog(self) -> None:
        """Deliver the next ``batch_limit`` events of a large read; schedule the rest."""
        if self._backlog is None:
            return  # delivered when the connection was lost
        events, start = self._backlog
        end = start + self.batch_limit
        outcome = self._deliver(events[start:end])
        protocol = self.protocol
        if outcome == _DONE and end < len(events):
            self._backlog = (events, end)
            out = protocol.data_to_send(send_close=False)
            if out:
                write_chunks(self.transport, out)
            self.loop.call_soon(self._deliver_backlog)
            return
        self._backlog = None
        self._hold_close = False
        if outcome == _FAILED:
            return
        if not self._read_paused_for_write and not self.transport.is_closing():
            self.transport.resume_reading()
        out = protocol.data_to_send()
        if out:
            write_chunks(self.transport, out)
        if protocol.state is State.CLOSED:
            self._closing_handshake_done()

    def _on_other_event(self, event: object) -> None:
        kind = type(event)
        if kind is Request:
            assert isinstance(event, Request)
            self._got_request(event)
        elif kind is Close:
            pass
        else:
            # Ping (already answered by the core) or Pong.
            if isinstance(event, Pong):
                self._on_pong(event.data)

    def _on_event(self, event: object) -> None:
        # Used by TransportProtocol._process (EOF and handshake paths).
        kind = type(event)
        if kind is str or kind is bytes:
            self.listener.on_message(self, event)  # type: ignore[arg-type]
        else:
            self._on_other_event(event)

    # request and subprotocol are the core's (properties, not slots: 16 bytes per connection).

    @property
    def request(self) -> Request | None:
        """The opening handshake's request, once received (``None`` before)."""
        return self.protocol.request

    @request.setter
    def request(self, value: Request | None) -> None:
        self.protocol.request = value

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed on in the handshake, if any (``None`` until it succeeded)."""
        protocol = self.protocol
        if protocol.state is State.CONNECTING or protocol.handshake_exc is not None:
            return None
        return protocol.subprotocol

    def _handshake_complete(self) -> None:
        # The callback API does not expose the 101 response: let it go (its object and its
        # headers are 265 of the ~3.7 KiB an idle connection holds).
        self.protocol.response = None
        config = self.server.config
        if config.process_request is None and config.select_subprotocol is None:
            # No hook has seen the request: keep it packed until ws.request is read (an
            # equal Request then; ~130 bytes per idle connection, and the address tuple).
            self.protocol.pack_request()
        self._start_keepalive()
        self._opened = True
        try:
            self.listener.on_open(self)
        except Exception:
            logger.exception("listener on_open failed")
            self._fail(CloseCode.INTERNAL_ERROR, "")

    def pause_writing(self) -> None:
        super().pause_writing()
        if not self._read_paused_for_write and self.protocol.state is not State.CONNECTING:
            self._read_paused_for_write = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._read_paused_for_write:
            self._read_paused_for_write = False
            if not self.transport.is_closing() and self._backlog is None:
                self.transport.resume_reading()

    def _on_connection_lost(self) -> None:
        if self._backlog is not None:
            # Messages received before the end are delivered before on_close.
            events, start = self._backlog
            self._backlog = None
            self._hold_close = False
            self._deliver(events[start:])
        self._unregister()
        if self._opened:
            self._opened = False
            try:
                self.listener.on_close(self, self.protocol.close_code, self.protocol.close_reason)
            except Exception:
                logger.exception("listener on_close failed")

    # -----------------------------------------------------------------------------------------
    # What listeners call
    # -----------------------------------------------------------------------------------------

    @property
    def path_params(self) -> dict[str, Any]:
        """The path parameters of the :class:`~shakehands.Router` route that matched:
        ``{"name": "lobby"}`` for ``/rooms/{name}``; ``{}`` without a router."""
        return path_params_of(self.request)

    def send(self, message: str | bytes | bytearray | memoryview, *, compress: bool = True) -> None:
        """Queue a message (text for ``str``, binary otherwise); it leaves with the batch.

        ``compress=False`` sends it uncompressed even when permessage-deflate is on.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        protocol = self.protocol
        if protocol.state is not State.OPEN:
            raise protocol.close_exception()
        kind = type(message)
        if kind is bytes:  # the common case first: an echo, a serialised payload
            protocol.send_binary(message, compress=compress)  # type: ignore[arg-type]
        elif isinstance(message, str):
            protocol.send_text(message, compress=compress)
        elif isinstance(message, _BytesLike):
            protocol.send_binary(message, compress=compress)
        else:
            raise unsendable(message, fragments=False)
        if not self._in_batch:
            self._flush()

    @property
    def writable(self) -> bool:
        """False while the write buffer is above its high-water mark (reading is paused)."""
        return not self._writing_paused

    def ping(self, data: bytes | None = None) -> asyncio.Future[float]:
        """Send a ping; the returned future gives the round-trip time when the pong comes."""
        return self._send_ping(data)

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake; ``on_close`` is called when the connection is gone."""
        if self.protocol.state is State.OPEN:
            self._start_close(code, reason)

    @property
    def open(self) -> bool:
        """Whether messages can be sent."""
        return self.protocol.state is State.OPEN


def serve_callbacks(
    listener: Listener | Router,
    host: str | None = None,
    port: int | None = None,
    **options: Unpack[ServeOptions],
) -> ServeContext[CallbackConnection]:
    """Start a WebSocket server driven by a :class:`Listener`: the fast path.

    Takes the same options as :func:`~shakehands.serve` (``process_request`` must be a plain
    function here, or return an awaitable: both work). ``listener`` may be a
    :class:`~shakehands.Router` of listeners: its ``process_request`` runs first (404 for paths
    it does not route), then yours, if any.

    Example::

        class Echo(Listener):
            def on_message(self, ws, message):
                ws.send(message)

        async with serve_callbacks(Echo(), "127.0.0.1", 8765) as server:
            await server.serve_forever()
    """
    from ._fastpath import connection_factory  # the seam: compiled data path or pure Python

    if isinstance(listener, Router):
        options["process_request"] = listener.with_process_request(options.get("process_request"))
        listener = RoutedListener(listener)
    config, secure, create_kwargs = split_server_options(options)
    server: Server[CallbackConnection] = Server(config, secure=secure)
    return ServeContext(
        connection_factory(listener),
        server,
        host,
        port,
        create_kwargs,
    )


def unix_serve_callbacks(
    listener: Listener | Router,
    path: str | os.PathLike[str] | None = None,
    **options: Unpack[UnixServeOptions],
) -> ServeContext[CallbackConnection]:
    """:func:`serve_callbacks` on a Unix domain socket (``path``, or the ``sock`` option).

    The socket file is handled as by :func:`~shakehands.asyncio.server.unix_serve`: a stale one
    is replaced, a live one is an error, and it is removed when the server closes.

    Example::

        async with unix_serve_callbacks(Echo(), "/tmp/echo.sock") as server:
            await server.serve_forever()
    """
    return serve_callbacks(listener, **options)._listen_unix(path)
