"""The asyncio server: ``async with serve(handler, host, port) as server``.

:class:`ServerConnection` answers the opening handshake (after the ``process_request`` hook has
seen the request: the seed's ``getRequest`` / ``putResponse``), then runs ``handler(ws)`` in a task
and closes the connection when it returns. :class:`Server` tracks connections and shuts down
gracefully: 1001 to every client, ``close_timeout`` for their answers, then abort.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

from ..protocol.connection import DEFAULT_MAX_MESSAGE_SIZE, State
from ..protocol.deflate import DeflateOptions, compression_options
from ..protocol.errors import CloseCode, ConnectionClosed, InvalidHandshake
from ..protocol.handshake import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_LINE,
    Request,
    Response,
    error_response,
)
from ..protocol.hixie76 import new_server_protocol
from ..protocol.server import SelectSubprotocol, ServerProtocol
from .base import TransportProtocol
from .connection import WebSocketConnection

__all__ = ["serve", "Server", "ServerConnection", "ProcessRequest", "Handler"]

logger = logging.getLogger("shakehands.server")

#: ``process_request(request)``: return ``None`` to go on with the upgrade, or a
#: :class:`Response` to answer with instead. May be a coroutine function.
ProcessRequest = Callable[[Request], "Response | None | Awaitable[Response | None]"]
#: ``handler(ws)``: the coroutine run for each connection.
Handler = Callable[["ServerConnection"], Awaitable[Any]]

C = TypeVar("C", bound=TransportProtocol)


class ServerOptions:
    """What every server connection of one server shares (built by :func:`serve`)."""

    def __init__(
        self,
        *,
        process_request: ProcessRequest | None = None,
        origins: Sequence[str | None] | None = None,
        subprotocols: Sequence[str] | None = None,
        select_subprotocol: SelectSubprotocol | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_frame_size: int | None = None,
        max_line: int = MAX_LINE,
        max_headers: int = MAX_HEADERS,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_queue: int = 32,
        write_limit: int = 2**16,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        open_timeout: float | None = 10.0,
        close_timeout: float | None = 10.0,
        compression: str | DeflateOptions | None = "deflate",
        legacy_hixie76: bool = False,
        max_connections: int | None = None,
    ) -> None:
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be at least 1 (or None: no limit)")
        self.process_request = process_request
        self.compression = compression_options(compression)
        self.origins = origins
        self.subprotocols = subprotocols
        self.select_subprotocol = select_subprotocol
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self.max_line = max_line
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.max_queue = max_queue
        self.write_limit = write_limit
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        #: Accept draft-76 handshakes too (:mod:`shakehands.protocol.hixie76`); off by default.
        self.legacy_hixie76 = legacy_hixie76
        #: Whether the server runs TLS (draft-76 answers name the scheme); set by ``serve``.
        self.secure = False
        self.max_connections = max_connections

    def new_protocol(self) -> ServerProtocol:
        """A fresh sans-I/O server connection with these limits."""
        return new_server_protocol(
            legacy_hixie76=self.legacy_hixie76,
            secure=self.secure,
            origins=self.origins,
            subprotocols=self.subprotocols,
            select_subprotocol=self.select_subprotocol,
            max_line=self.max_line,
            max_headers=self.max_headers,
            max_header_bytes=self.max_header_bytes,
            max_message_size=self.max_message_size,
            max_frame_size=self.max_frame_size,
            compression=self.compression,
        )


#: The attributes of :class:`ServerHandshake`, for the ``__slots__`` of the classes mixing it in.
HANDSHAKE_SLOTS = ("server", "options", "_open_handle", "_over_limit")


class ServerHandshake:
    """The server side of the opening handshake, mixed into both server connection classes.

    It starts ``open_timeout`` at connection, hands the request to ``process_request``, and
    sends the answer; :meth:`_handshake_complete` is called on a 101.
    """

    protocol: ServerProtocol
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    server: Server[Any]
    options: ServerOptions
    ping_interval: float | None

    # No __slots__ here (two bases with slots cannot be mixed): the classes it is mixed into
    # put HANDSHAKE_SLOTS in theirs and call _init_handshake (a slot of theirs would hide a
    # default value set here).

    _open_handle: asyncio.TimerHandle | None
    #: Beyond ``max_connections``: the request gets a 503 and the connection is not counted.
    _over_limit: bool

    def _init_handshake(self, server: Server[Any], options: ServerOptions) -> None:
        self.server = server
        self.options = options
        self._open_handle = None
        self._over_limit = False

    def _register(self, transport: asyncio.BaseTransport) -> None:
        server = self.server
        server._connections.add(self)
        limit = self.options.max_connections
        if limit is not None and len(server._admitted) >= limit:
            self._over_limit = True
        else:
            server._admitted.add(self)
        if self.options.open_timeout is not None:
            self._open_handle = self.loop.call_later(self.options.open_timeout, self._open_expired)

    def _unregister(self) -> None:
        """The TCP connection is gone: forget it (called once, from connection_lost)."""
        if self._open_handle is not None:
            self._open_handle.cancel()
            self._open_handle = None  # a cancelled timer kept alive costs memory per connection
        self.server._connections.discard(self)
        self.server._admitted.discard(self)

    def _open_expired(self) -> None:
        if self.protocol.state is State.CONNECTING:
            logger.info("opening handshake timed out; dropping %s", self._peer())
            self.transport.abort()

    def _peer(self) -> Any:
        return self.transport.get_extra_info("peername")

    def _got_request(self, request: Request) -> None:
        request.remote_address = self._peer()
        if self._over_limit:
            logger.info("server full (max_connections); refusing %s with 503", self._peer())
            self._answer(
                error_response(
                    503,
                    "server full: too many connections, try again later",
                    [("Retry-After", "1")],
                )
            )
            return
        hook = self.options.process_request
        if hook is None:
            self._answer(None)
            return
        # Stop reading until we answer: the core keeps at most a bounded amount of early data.
        self.transport.pause_reading()
        try:
            result = hook(request)
        except Exception:
            logger.exception("process_request failed")
            self._answer(Response(500, body=b"Internal Server Error\n"))
            return
        if inspect.isawaitable(result):
            task = self.loop.create_task(self._await_hook(result))
            self.server._tasks.add(task)
            task.add_done_callback(self.server._tasks.discard)
        else:
            self._answer(result)

    async def _await_hook(self, result: Awaitable[Response | None]) -> None:
        try:
            response = await result
        except Exception:
            logger.exception("process_request failed")
            response = Response(500, body=b"Internal Server Error\n")
        self._answer(response)

    def _answer(self, response: Response | None) -> None:
        if self.transport.is_closing():
            return
        if self.protocol.state is not State.CONNECTING:
            # The core refused the request on its own (too much early data) or the peer left:
            # read again, or the peer's EOF that ends the half-close would never be seen.
            self.transport.resume_reading()
            return
        if response is None:
            response = self.protocol.accept()
        elif not isinstance(response, Response):
            logger.error("process_request returned %r, not a Response or None", response)
            response = Response(500, body=b"Internal Server Error\n")
        if response.status != 101 and "Connection" not in response.headers:
            response.headers.add("Connection", "close")
        self.protocol.send_response(response)
        if self._open_handle is not None:
            self._open_handle.cancel()
            self._open_handle = None  # a cancelled timer kept alive costs memory per connection
        if response.status == 101:
            if getattr(self.protocol, "hixie76", False):
                self.ping_interval = None  # draft-76 has no ping: no keepalive
            self._handshake_complete()
        else:
            exc = self.protocol.handshake_exc
            if isinstance(exc, InvalidHandshake) and response.status >= 400:
                logger.info("refused %s: %d %s", self._peer(), response.status, exc.reason)
        # Read again either way: after a refusal the core discards what comes, but the peer's
        # EOF must be seen to finish the half-close of _shutdown_transport.
        if not self.transport.is_reading():
            self.transport.resume_reading()
        self._process()  # type: ignore[attr-defined]

    def _handshake_complete(self) -> None:
        raise NotImplementedError


class ServerConnection(ServerHandshake, WebSocketConnection):
    """A server-side connection of the coroutine API: what ``handler(ws)`` receives.

    Besides :class:`WebSocketConnection`'s API: :attr:`request` (path, headers, origin, the
    remote address) and :attr:`subprotocol`.
    """

    protocol: ServerProtocol

    __slots__ = (*HANDSHAKE_SLOTS, "handler", "handler_task")

    def __init__(self, server: Server[Any], handler: Handler, options: ServerOptions) -> None:
        super().__init__(
            options.new_protocol(),
            max_queue=options.max_queue,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            close_timeout=options.close_timeout,
            write_limit=options.write_limit,
        )
        self._init_handshake(server, options)
        self.handler = handler
        self.handler_task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._register(transport)

    def _on_handshake_event(self, event: object) -> None:
        if isinstance(event, Request):
            self.request = event
            self._got_request(event)

    def _handshake_complete(self) -> None:
        self.response = self.protocol.response
        self.subprotocol = self.protocol.subprotocol
        self._start_keepalive()
        self.handler_task = self.loop.create_task(self._run_handler())
        self.server._tasks.add(self.handler_task)
        self.handler_task.add_done_callback(self.server._tasks.discard)

    async def _run_handler(self) -> None:
        try:
            await self.handler(self)
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("connection handler failed")
            self._start_close(CloseCode.INTERNAL_ERROR, "")
        # The handler is done: the connection ends with it.
        await self.close()

    def _on_connection_lost(self) -> None:
        super()._on_connection_lost()
        self._unregister()


class Server(Generic[C]):
    """A listening WebSocket server; what ``serve(...)`` gives.

    Use as ``async with serve(...) as server: await server.serve_forever()``; leaving the block
    closes it gracefully.
    """

    def __init__(self, close_timeout: float | None) -> None:
        self.close_timeout = close_timeout
        self._server: asyncio.Server | None = None
        #: Live connections (handshake in progress or open).
        self._connections: set[C] = set()
        #: The live connections that count against ``max_connections``.
        self._admitted: set[C] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Task[None] | None = None

    @property
    def connections(self) -> set[C]:
        """The live connections: a copy, safe to iterate while they come and go."""
        return set(self._connections)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        assert self._server is not None
        return tuple(self._server.sockets)

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful with ``port=0``)."""
        return int(self.sockets[0].getsockname()[1])

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called (or the task is cancelled)."""
        assert self._server is not None
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            if self._closing is None:
                raise

    def close(self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down") -> None:
        """Stop accepting; close every connection with ``code`` (1001 by default).

        Open connections get a close frame; those that do not answer within ``close_timeout``
        are aborted; connections still in the handshake are dropped. Await :meth:`wait_closed`.
        """
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        assert self._server is not None
        self._server.close()
        for connection in list(self._connections):
            if connection.protocol.state is State.CONNECTING:
                connection.transport.abort()
            else:
                connection._start_close(code, reason)
        waiters = [c.closed_future for c in self._connections]
        if waiters:
            await asyncio.wait(waiters)
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        await self._server.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` has finished: every connection and handler is done."""
        if self._closing is None:
            assert self._server is not None
            await self._server.wait_closed()
            return
        await asyncio.shield(self._closing)

    async def __aenter__(self) -> Server[C]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


class ServeContext(Generic[C]):
    """What :func:`serve` returns: await it, or use it as an async context manager."""

    def __init__(
        self,
        factory: Callable[[Server[C]], C],
        server: Server[C],
        host: str | None,
        port: int | None,
        create_server_kwargs: dict[str, Any],
    ) -> None:
        self._factory = factory
        self._server = server
        self._host = host
        self._port = port
        self._kwargs = create_server_kwargs

    async def _start(self) -> Server[C]:
        loop = asyncio.get_running_loop()
        server = self._server
        server._server = await loop.create_server(
            lambda: self._factory(server), self._host, self._port, **self._kwargs
        )
        return server

    def __await__(self) -> Any:
        return self._start().__await__()

    async def __aenter__(self) -> Server[C]:
        return await self._start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._server.__aexit__(exc_type, exc, tb)


def split_server_options(
    options: dict[str, Any],
) -> tuple[ServerOptions, dict[str, Any]]:
    """Separate WebSocket options from ``loop.create_server`` ones (ssl, sock, reuse_port...)."""
    create_keys = {
        "ssl",
        "ssl_handshake_timeout",
        "sock",
        "reuse_port",
        "reuse_address",
        "backlog",
        "family",
        "flags",
    }
    create = {k: options.pop(k) for k in list(options) if k in create_keys}
    ssl_context = create.get("ssl")
    if ssl_context is not None and not isinstance(ssl_context, ssl_module.SSLContext):
        raise TypeError("ssl must be an ssl.SSLContext")
    ws_options = ServerOptions(**options)
    ws_options.secure = ssl_context is not None
    if ssl_context is not None and "ssl_handshake_timeout" not in create:
        # The TLS handshake runs before connection_made, so open_timeout cannot see it: bound it
        # with the same value rather than asyncio's default of 60 s.
        create["ssl_handshake_timeout"] = ws_options.open_timeout
    return ws_options, create


def serve(
    handler: Handler,
    host: str | None = None,
    port: int | None = None,
    **options: Any,
) -> ServeContext[ServerConnection]:
    """Start a WebSocket server that runs ``handler(ws)`` for every connection.

    Args:
        handler: coroutine function taking a :class:`ServerConnection`; the connection closes
            (1000) when it returns, or with 1011 if it raises.
        host, port: where to listen (``port=0`` picks a free port: see :attr:`Server.port`).
        process_request: ``process_request(request)`` sees every request before any answer
            and may return a :class:`~shakehands.Response` to answer it instead of upgrading.
        origins: allowed ``Origin`` values (``None`` in the list allows a missing header);
            others get 403. Default: any origin.
        subprotocols, select_subprotocol: subprotocol negotiation.
        max_message_size: 1 MiB by default (``None`` for no limit); larger messages: 1009.
        max_frame_size: limit per frame (default none).
        max_queue: received messages buffered before reading pauses (32).
        write_limit: high-water mark of the write buffer above which ``send`` waits (64 KiB).
        ping_interval, ping_timeout: keepalive (20 s / 20 s; ``None`` disables).
        open_timeout: seconds to complete the handshake (10).
        close_timeout: seconds to wait for the closing handshake (10).
        max_connections: most connections held at once (handshakes included; default no
            limit). Beyond it a request is answered ``503 Service Unavailable`` with
            ``Retry-After: 1`` and the connection closed; the server keeps serving.
        compression: ``"deflate"`` (default: permessage-deflate, RFC 7692, with
            :class:`~shakehands.DeflateOptions` defaults), a ``DeflateOptions``, or ``None``.
        legacy_hixie76: also accept draft-hixie-76 clients (the seed's protocol; off by
            default; see :mod:`shakehands.protocol.hixie76`).
        ssl: an ``ssl.SSLContext`` to serve ``wss://``.
        sock, reuse_port, backlog: passed to ``loop.create_server``.

    Example::

        async def echo(ws):
            async for message in ws:
                await ws.send(message)

        async with serve(echo, "127.0.0.1", 8765) as server:
            await server.serve_forever()
    """
    ws_options, create_kwargs = split_server_options(dict(options))
    server: Server[ServerConnection] = Server(ws_options.close_timeout)
    return ServeContext(
        lambda srv: ServerConnection(srv, handler, ws_options),
        server,
        host,
        port,
        create_kwargs,
    )
