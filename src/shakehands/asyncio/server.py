"""The asyncio server: ``async with serve(handler, host, port) as server``.

:class:`ServerConnection` answers the opening handshake (after the ``process_request`` hook has
seen the request: the seed's ``getRequest`` / ``putResponse``), then runs ``handler(ws)`` in a task
and closes the connection when it returns. :class:`Server` tracks connections and shuts down
gracefully: 1001 to every client, ``close_timeout`` for their answers, then abort.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import ssl as ssl_module
import threading
from asyncio.constants import ACCEPT_RETRY_DELAY
from asyncio.selector_events import BaseSelectorEventLoop
from collections.abc import Awaitable, Callable, Generator, Iterable
from types import TracebackType
from typing import Any, Generic, TypedDict, TypeVar, Unpack

from ..protocol.config import (
    ProcessRequest,
    ServerConfig,
    ServerOptions,
    check_handler,
    server_config,
)
from ..protocol.connection import State
from ..protocol.errors import CloseCode, ConnectionClosed
from ..protocol.handshake import (
    Request,
)
from ..protocol.hixie76 import new_server_protocol
from ..protocol.server import ServerProtocol
from ..router import Router, path_params_of
from ..unix import UnixSocketFile, bind_unix_socket
from .base import TransportProtocol
from .connection import WebSocketConnection
from .handshake import HANDSHAKE_SLOTS, OpenTimeouts, ServerHandshake

__all__ = [
    "serve",
    "unix_serve",
    "Server",
    "ServerConnection",
    "ProcessRequest",
    "Handler",
    "UnixServeOptions",
]

logger = logging.getLogger("shakehands.server")

#: ``handler(ws)``: the coroutine run for each connection.
Handler = Callable[["ServerConnection"], Awaitable[Any]]

C = TypeVar("C", bound=TransportProtocol)


def _default_handler(handler: object) -> bool:
    """Whether ``handler`` (a ``signal.getsignal`` result) is one that ``serve_forever`` may
    replace for the time it serves: Python's default, or ``asyncio.run``'s for Ctrl-C."""
    if handler in (signal.SIG_DFL, signal.default_int_handler, None):
        return True
    method = getattr(handler, "func", None)  # asyncio.Runner installs a partial of _on_sigint
    return getattr(method, "__func__", None) is getattr(asyncio.Runner, "_on_sigint", ())


class ServerConnection(ServerHandshake, WebSocketConnection):
    """A server-side connection of the coroutine API: what ``handler(ws)`` receives.

    Besides :class:`WebSocketConnection`'s API: :attr:`request` (path, headers, origin, the
    remote address) and :attr:`subprotocol`.
    """

    protocol: ServerProtocol

    __slots__ = (*HANDSHAKE_SLOTS, "handler", "handler_task")

    def __init__(self, server: Server[Any], handler: Handler) -> None:
        super().__init__(server.new_protocol(), server.config)
        self._init_handshake(server)
        self.handler = handler
        self.handler_task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._register(transport)

    @property
    def path_params(self) -> dict[str, Any]:
        """The path parameters of the :class:`~shakehands.Router` route that matched:
        ``{"name": "lobby"}`` for ``/rooms/{name}``; ``{}`` without a router."""
        return path_params_of(self.request)

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

    def __init__(self, config: ServerConfig, *, secure: bool = False) -> None:
        #: The options of this server, shared by all its connections.
        self.config = config
        #: Whether the server runs TLS (a draft-76 answer names the scheme).
        self.secure = secure
        self._server: asyncio.Server | None = None
        #: Live connections (handshake in progress or open): a dict used as an ordered set
        #: (idle memory: about half the bytes per entry of a set).
        self._connections: dict[C, None] = {}
        #: How many of them count against ``max_connections`` (those not ``_over_limit``):
        #: a count, not a second set (idle memory: a set entry per connection).
        self._admitted = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Task[None] | None = None
        #: The Unix socket file ``unix_serve`` created, removed when the server closes.
        self._socket_file: UnixSocketFile | None = None
        #: Live HTTP/2 connections (:mod:`shakehands.http2.server`), for GOAWAY at shutdown.
        self._http2: set[Any] = set()
        #: The connections' ``open_timeout`` timer (made by the first connection).
        self._open_timeouts: OpenTimeouts | None = None
        #: What accepts the connections when asyncio's own accept is replaced (see
        #: :class:`DirectAccept`), else ``None``.
        self._acceptor: DirectAccept | None = None

    @property
    def close_timeout(self) -> float | None:
        """Seconds that closing waits for the clients' answers (``config.close_timeout``)."""
        return self.config.close_timeout

    def new_protocol(self) -> ServerProtocol:
        """A fresh sans-I/O server connection with this server's options."""
        config = self.config
        if not config.legacy_hixie76:
            return ServerProtocol(config)  # what new_server_protocol makes, one call less
        return new_server_protocol(config, secure=self.secure)

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
        """The port of the first listening socket (useful with ``port=0``).

        Raises:
            ValueError: a server on a Unix socket (``unix_serve``) has no port.
        """
        address = self.sockets[0].getsockname()
        if isinstance(address, (str, bytes)):
            raise ValueError(f"a Unix socket server has no port (it listens on {address!r})")
        return int(address[1])

    async def serve_forever(
        self, *, stop_signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)
    ) -> None:
        """Serve until :meth:`close` is called, or one of ``stop_signals`` arrives.

        SIGINT (Ctrl-C) and SIGTERM (``kill``, ``docker stop``) shut the server down
        gracefully, as :meth:`close` does: every client gets a 1001 close frame, the handlers
        finish, and this returns once all is closed, so that ``asyncio.run(main())`` exits
        normally. The handlers are the event loop's (``loop.add_signal_handler``), installed
        for the duration of the call only when it runs in the main thread (where Python
        delivers signals; not on Windows), and only for a signal that still has its default
        handler (or ``asyncio.run``'s Ctrl-C handler): a handler the program set itself, or
        an ignored signal, is left alone. Pass ``stop_signals=()`` to handle signals yourself.
        Returns after :meth:`close` too; cancelling the task stops serving without the
        graceful close.
        """
        assert self._server is not None
        loop = asyncio.get_running_loop()
        installed: list[tuple[int, Any]] = []
        if threading.current_thread() is threading.main_thread():
            for signum in stop_signals:
                previous = signal.getsignal(signum)
                if not _default_handler(previous):
                    continue  # the program handles (or ignores) this signal itself
                try:
                    loop.add_signal_handler(signum, self.close)
                except (NotImplementedError, RuntimeError, ValueError):
                    continue
                installed.append((signum, previous))
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            if self._closing is None:
                raise
        finally:
            for signum, previous in installed:
                loop.remove_signal_handler(signum)
                if previous is not None:
                    # What was there before (asyncio.run's own Ctrl-C handler, say).
                    signal.signal(signum, previous)
        await self.wait_closed()

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
        for http2 in list(self._http2):
            http2.goaway()
        for connection in list(self._connections):
            if connection.protocol.state is State.CONNECTING:
                connection.transport.abort()
            else:
                connection._start_close(code, reason)
        waiters: list[asyncio.Future[None]] = [c.closed_future for c in self._connections]
        waiters += [http2.closed for http2 in self._http2]
        if waiters:
            await asyncio.wait(waiters)
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        await self._server.wait_closed()
        if self._socket_file is not None:
            self._socket_file.remove()

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


#: asyncio's selector event loop (its private methods are used below: Any for the type checker).
_SELECTOR_LOOP: Any = BaseSelectorEventLoop

#: The ``accept()`` errors after which asyncio stops accepting for a while (the listening socket
#: stays readable: accepting again at once would spin).
_ACCEPT_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class DirectAccept:
    """Accept connections without a ``Task`` per connection, on asyncio's selector event loop.

    asyncio accepts each connection in a ``Task`` (``BaseSelectorEventLoop._accept_connection2``)
    that makes the transport, awaits a ``Future`` set one loop iteration later, and ends: a
    coroutine, a ``Task``, a ``Future`` and three ``call_soon`` handles per connection, for a
    server whose connections take no awaitable set-up (no TLS). This reader of the listening
    socket accepts up to ``backlog`` connections per wake-up, as asyncio's does, and makes each
    transport at once with the loop's own ``_make_socket_transport`` (what that Task calls): the
    transport calls ``connection_made`` and starts reading on the next iteration, exactly as
    before, and is counted by the ``asyncio.Server`` (``wait_closed``) as before.
    ``asyncio.Server.close()`` removes this reader with the socket, as it removes its own.

    Used only where it is the same as asyncio's path: the selector loop with asyncio's own
    accept, no TLS, debug mode off (asyncio logs each accept then). uvloop accepts in C without
    a Task: it keeps its own path.

    A connection factory may name its own transport class (``factory.transport``: the callback
    API's compiled path names :class:`~._transport.LeanTransport`); the connections then get
    that instead of the loop's ``_SelectorSocketTransport``, made as
    ``transport(loop, sock, protocol, peername, server)`` (it calls ``connection_made`` on the
    next iteration and counts itself with the ``asyncio.Server``, as the loop's does).
    """

    __slots__ = ("loop", "server", "factory", "backlog", "transport")

    #: Whether servers take their accept over (tests turn it off to run asyncio's path).
    enabled = True

    #: Whether a connection factory that names a transport class (``factory.transport``: the
    #: callback API's compiled path, :class:`~._transport.LeanTransport`) gets it (tests and
    #: ``bench`` turn it off to run the loop's own transport).
    lean = True

    def __init__(
        self,
        loop: Any,
        server: asyncio.Server,
        factory: Callable[[], asyncio.BaseProtocol],
        backlog: int,
        transport: Callable[..., asyncio.BaseTransport] | None = None,
    ) -> None:
        self.loop = loop
        self.server: Any = server
        self.factory = factory
        self.backlog = backlog
        #: ``transport(loop, sock, protocol, peername, server)`` makes each connection's
        #: transport (:class:`~._transport.LeanTransport`), or ``None``: the loop's own.
        self.transport = transport

    @classmethod
    def take_over(
        cls,
        loop: asyncio.AbstractEventLoop,
        server: asyncio.Server,
        factory: Callable[[], asyncio.BaseProtocol],
        create_kwargs: dict[str, Any],
        transport: Callable[..., asyncio.BaseTransport] | None = None,
    ) -> DirectAccept | None:
        """Replace asyncio's reader of ``server``'s listening sockets with one of these, if
        ``loop`` and the options allow it (see the class docstring); ``None`` otherwise.
        ``transport``: what makes the transports instead of the loop (see :attr:`transport`)."""
        sockets = getattr(server, "_sockets", None)
        if (
            not cls.enabled
            or create_kwargs.get("ssl") is not None
            or not isinstance(loop, _SELECTOR_LOOP)
            or getattr(type(loop), "_accept_connection", None)
            is not _SELECTOR_LOOP._accept_connection
            or getattr(type(loop), "_make_socket_transport", None)
            is not _SELECTOR_LOOP._make_socket_transport
            or loop.get_debug()
            or not isinstance(sockets, list)
            or not server.is_serving()
        ):
            return None
        acceptor = cls(loop, server, factory, create_kwargs.get("backlog", 100), transport)
        for sock in sockets:
            loop.remove_reader(sock.fileno())
            acceptor._listen(sock)
        return acceptor

    def _listen(self, sock: socket.socket) -> None:
        self.loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        loop = self.loop
        server = self.server
        factory = self.factory
        lean = self.transport
        make_transport = loop._make_socket_transport
        # With the lean transport, socket.accept() without its Python wrapper (which reads the
        # listening socket's family and type through enum conversions for every connection).
        raw_accept = None
        if lean is not None:
            raw_accept = sock._accept  # type: ignore[attr-defined]
            family, type_, proto = int(sock.family), int(sock.type), sock.proto
        for _ in range(self.backlog):
            try:
                if raw_accept is not None:
                    fd, addr = raw_accept()
                    try:
                        conn = socket.socket(family, type_, proto, fd)
                    except BaseException:
                        os.close(fd)
                        raise
                else:
                    conn, addr = sock.accept()
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # nothing left to accept
            except OSError as exc:
                if exc.errno not in _ACCEPT_OUT_OF_RESOURCES:
                    raise  # the event loop logs it and goes on, as with asyncio's reader
                # The socket stays readable: stop accepting for a while (asyncio does the same).
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": exc,
                        "socket": sock,
                    }
                )
                loop.remove_reader(sock.fileno())
                loop.call_later(ACCEPT_RETRY_DELAY, self._retry, sock)
                return
            protocol = None
            try:
                protocol = factory()
                if lean is not None:
                    lean(loop, conn, protocol, addr, server)
                else:
                    make_transport(conn, protocol, extra={"peername": addr}, server=server)
            except (SystemExit, KeyboardInterrupt):
                conn.close()
                raise
            except BaseException as exc:
                conn.close()
                loop.call_exception_handler(
                    {
                        "message": "Error on transport creation for incoming connection",
                        "exception": exc,
                        "protocol": protocol,
                    }
                )

    def _retry(self, sock: socket.socket) -> None:
        if self.server.is_serving() and sock.fileno() != -1:
            self._listen(sock)


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
        self._unix = False
        self._unix_path: str | os.PathLike[str] | None = None

    def _listen_unix(self, path: str | os.PathLike[str] | None) -> ServeContext[C]:
        """Listen on the Unix socket ``path`` (or the ``sock`` option) instead of TCP."""
        sock = self._kwargs.get("sock")
        if (path is None) == (sock is None):
            raise TypeError("unix_serve needs a path or a sock option: exactly one of them")
        if sock is not None and getattr(sock, "family", None) != socket.AF_UNIX:
            raise ValueError(f"sock must be an AF_UNIX socket, got {sock!r}")
        self._unix = True
        self._unix_path = path
        return self

    def _protocol_factory(self) -> Callable[[], asyncio.BaseProtocol]:
        """What ``loop.create_server`` calls for each connection: with HTTP/2 on, a protocol
        that picks HTTP/2 or HTTP/1.1 by ALPN once TLS is up."""
        server, factory = self._server, self._factory
        if server.config.http2:
            from ..http2.server import ALPNSwitch

            return lambda: ALPNSwitch(server, factory)
        return lambda: factory(server)

    def _lean_transport(self) -> Callable[..., asyncio.BaseTransport] | None:
        """The transport class the connection factory asks for (its ``transport`` attribute:
        the callback API's compiled path), if :attr:`DirectAccept.lean` allows it."""
        if not DirectAccept.lean or self._server.config.http2:
            return None
        return getattr(self._factory, "transport", None)

    async def _start(self) -> Server[C]:
        loop = asyncio.get_running_loop()
        server = self._server
        if not self._unix:
            factory = self._protocol_factory()
            server._server = await loop.create_server(
                factory, self._host, self._port, **self._kwargs
            )
            server._acceptor = DirectAccept.take_over(
                loop, server._server, factory, self._kwargs, self._lean_transport()
            )
            return server
        kwargs = dict(self._kwargs)
        if self._unix_path is not None:
            kwargs["sock"], server._socket_file = bind_unix_socket(
                self._unix_path, kwargs.get("backlog", 100)
            )
        factory = self._protocol_factory()
        try:
            server._server = await loop.create_unix_server(factory, **kwargs)
        except BaseException:
            if self._unix_path is not None:
                kwargs["sock"].close()
                if server._socket_file is not None:
                    server._socket_file.remove()
            raise
        server._acceptor = DirectAccept.take_over(
            loop, server._server, factory, kwargs, self._lean_transport()
        )
        return server

    def __await__(self) -> Generator[Any, None, Server[C]]:
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


class CreateServerOptions(TypedDict, total=False):
    """The keyword arguments of ``serve`` and ``serve_callbacks`` that go to
    ``loop.create_server`` (see the asyncio documentation)."""

    ssl: ssl_module.SSLContext | None
    ssl_handshake_timeout: float | None
    sock: socket.socket | None
    reuse_port: bool | None
    reuse_address: bool | None
    backlog: int
    family: int
    flags: int


class ServeOptions(ServerOptions, CreateServerOptions, total=False):
    """Every keyword argument of :func:`serve` and ``serve_callbacks``: the WebSocket options
    (:class:`~shakehands.protocol.config.ServerConfig`) and ``loop.create_server``'s."""


_CREATE_SERVER_KEYS = frozenset(CreateServerOptions.__annotations__)


class UnixServeOptions(ServerOptions, total=False):
    """Every keyword argument of :func:`unix_serve` and ``unix_serve_callbacks``: the
    WebSocket options and those of ``loop.create_unix_server``."""

    ssl: ssl_module.SSLContext | None
    ssl_handshake_timeout: float | None
    sock: socket.socket | None
    backlog: int


def split_server_options(
    options: ServeOptions,
) -> tuple[ServerConfig, bool, dict[str, Any]]:
    """Map ``serve``'s keyword arguments: ``(config, secure, loop.create_server kwargs)``.

    Raises:
        TypeError, ValueError: an unknown option, or a bad value (named in the message).
    """
    ws_options: dict[str, Any] = dict(options)
    create = {k: ws_options.pop(k) for k in list(ws_options) if k in _CREATE_SERVER_KEYS}
    ssl_context = create.get("ssl")
    if ssl_context is not None and not isinstance(ssl_context, ssl_module.SSLContext):
        raise TypeError(f"ssl must be an ssl.SSLContext, got {ssl_context!r}")
    config = server_config(**ws_options)
    config = config.replace(http2=_http2_on(config.http2, ssl_context))
    if ssl_context is not None and "ssl_handshake_timeout" not in create:
        # The TLS handshake runs before connection_made, so open_timeout cannot see it: bound it
        # with the same value rather than asyncio's default of 60 s.
        create["ssl_handshake_timeout"] = config.open_timeout
    return config, ssl_context is not None, create


def _http2_on(http2: bool | None, ssl_context: ssl_module.SSLContext | None) -> bool:
    """Resolve the ``http2`` option (see :mod:`shakehands.http2.server`) and set the TLS
    context's ALPN protocols to match: ``h2`` and ``http/1.1``, or ``http/1.1`` only.

    Raises:
        ValueError: ``http2=True`` without TLS.
        ImportError: ``http2=True`` without the ``h2`` package (the ``http2`` extra).
    """
    if ssl_context is None:
        if http2:
            raise ValueError("http2=True needs TLS (ssl=...): browsers speak HTTP/2 over TLS only")
        return False
    on = False
    if http2 is not False:
        try:
            import h2.connection  # noqa: F401 - only to know whether it is there
        except ImportError:
            if http2:
                raise ImportError(
                    "http2=True needs the h2 package: pip install 'shakehands[http2]'"
                ) from None
            logger.info(
                "HTTP/2 off: the h2 package is not installed (pip install 'shakehands[http2]'); "
                "serving WebSockets over HTTP/1.1 only"
            )
        else:
            on = True
    ssl_context.set_alpn_protocols(["h2", "http/1.1"] if on else ["http/1.1"])
    return on


def _routed(router: Router, options: ServeOptions) -> Handler:
    """The handler that runs ``router``'s endpoints; its hook goes first in ``options``."""
    for route in router.routes:
        check_handler(route.endpoint, coroutine=True, expected="async def handler(ws): ...")
    options["process_request"] = router.with_process_request(options.get("process_request"))

    async def run_route(ws: ServerConnection) -> None:
        await router.endpoint_for(ws.request)(ws)

    return run_route


def serve(
    handler: Handler | Router,
    host: str | None = None,
    port: int | None = None,
    **options: Unpack[ServeOptions],
) -> ServeContext[ServerConnection]:
    """Start a WebSocket server that runs ``handler(ws)`` for every connection.

    Args:
        handler: coroutine function taking a :class:`ServerConnection`; the connection closes
            (1000) when it returns, or with 1011 if it raises. Checked here: anything else
            (a plain ``def``, a lambda, ``handler(ws, path)``) raises ``TypeError``. Or a
            :class:`~shakehands.Router` of such handlers: its ``process_request`` runs first
            (404 for paths it does not route), then yours, if any.
        host, port: where to listen (``port=0`` picks a free port: see :attr:`Server.port`).
        process_request: ``process_request(request)`` sees every request before any answer
            and may return a :class:`~shakehands.Response` to answer it instead of upgrading.
        origins: allowed ``Origin`` values (``None`` in the list allows a missing header);
            others get 403.
        subprotocols, select_subprotocol: subprotocol negotiation.
        max_message_size: largest message (``None`` for no limit); larger messages: 1009.
        max_frame_size: largest frame (``None`` for no limit).
        max_queue: received messages buffered before reading pauses.
        write_limit: high-water mark of the write buffer above which ``send`` waits.
        ping_interval, ping_timeout: keepalive (``None`` disables).
        open_timeout: seconds to complete the handshake.
        close_timeout: seconds to wait for the closing handshake.
        max_connections: most connections held at once (handshakes included). Beyond it
            a request is answered ``503 Service Unavailable`` with ``Retry-After: 1`` and the
            connection closed; the server keeps serving.
        compression: ``"deflate"`` (permessage-deflate, RFC 7692, with
            :class:`~shakehands.DeflateOptions` defaults), a ``DeflateOptions``, or ``None``.
        legacy_hixie76: also accept draft-hixie-76 clients (the seed's protocol; see
            :mod:`shakehands.protocol.hixie76`).
        ssl: an ``ssl.SSLContext`` to serve ``wss://``.
        http2: WebSockets over HTTP/2 (RFC 8441) on a TLS listener, same port: ``None`` (on
            with ``ssl`` when the ``h2`` package is installed), ``True``, ``False``. It sets
            the context's ALPN protocols. See :mod:`shakehands.http2.server`.
        http2_max_streams: most HTTP/2 streams open at once on one connection.
        sock, reuse_port, backlog: passed to ``loop.create_server``.

    Every option is defined, with its default, in
    :class:`~shakehands.protocol.config.ServerConfig` (and the README's options table).

    Example::

        async def echo(ws):
            async for message in ws:
                await ws.send(message)

        async with serve(echo, "127.0.0.1", 8765) as server:
            await server.serve_forever()
    """
    if isinstance(handler, Router):
        handler = _routed(handler, options)
    config, secure, create_kwargs = split_server_options(options)
    check_handler(handler, coroutine=True, expected="async def handler(ws): ...")
    server: Server[ServerConnection] = Server(config, secure=secure)
    from ._fastcoro import connection_factory  # the seam: compiled data path or pure Python

    return ServeContext(
        connection_factory(handler),
        server,
        host,
        port,
        create_kwargs,
    )


def unix_serve(
    handler: Handler | Router,
    path: str | os.PathLike[str] | None = None,
    **options: Unpack[UnixServeOptions],
) -> ServeContext[ServerConnection]:
    """:func:`serve` on a Unix domain socket: same handler, same options, no host and port.

    Behind a reverse proxy on the same machine (nginx ``proxy_pass http://unix:/run/app.sock``),
    a Unix socket spares the TCP stack and is protected by file permissions.

    Args:
        handler: as for :func:`serve` (a handler or a :class:`~shakehands.Router`).
        path: the socket file to create. One left by a server that no longer runs (a crash,
            ``kill -9``) is replaced; if a server still listens there, ``OSError``
            (``EADDRINUSE``); a path that exists and is not a socket: ``FileExistsError``.
            The file is removed when the server closes. A Linux abstract name (``"\\0name"``)
            has no file.
        options: every option of :func:`serve`; ``sock`` (an already bound ``AF_UNIX``
            socket, instead of ``path``: its file is yours to remove), ``backlog``, ``ssl``.
            The remote address of a connection is ``""`` (an unnamed Unix socket).

    Example::

        async with unix_serve(echo, "/tmp/echo.sock") as server:
            await server.serve_forever()
    """
    return serve(handler, **options)._listen_unix(path)
