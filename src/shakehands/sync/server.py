"""The blocking server: ``with serve(handler, host, port) as server: server.serve_forever()``.

:func:`serve` listens; :meth:`Server.serve_forever` accepts connections and gives each one a
thread, which answers the opening handshake (after the ``process_request`` hook has seen the
request: the seed's ``getRequest`` / ``putResponse``), runs ``handler(ws)`` and closes the
connection when it returns. The handshake's steps are in :mod:`.handshake` (also for code that
accepts its own sockets: see :mod:`.seed`); what to answer is decided by the sans-I/O
:class:`~shakehands.protocol.server.ServerProtocol`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import ssl as ssl_module
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Unpack

from ..protocol.config import ServerConfig, check_handler, server_config
from ..protocol.config import ServerOptions as ServerKeywords
from ..protocol.errors import CloseCode, ConnectionClosed, InvalidHandshake
from ..protocol.handshake import Request, Response
from ..protocol.hixie76 import new_server_protocol
from ..protocol.server import ServerProtocol
from ..router import Router, path_params_of
from ..unix import UnixSocketFile, bind_unix_socket
from .connection import Connection
from .handshake import REFUSAL_LINGER_BYTES, answer_request, read_request, server_handshake

__all__ = [
    "serve",
    "unix_serve",
    "Server",
    "ServerConnection",
    "ServerOptions",
    "ProcessRequest",
    "Handler",
    "server_handshake",
    "read_request",
    "answer_request",
    "REFUSAL_LINGER_BYTES",
]

logger = logging.getLogger("shakehands.sync.server")

#: ``process_request(request)``: ``None`` to go on with the upgrade, or a :class:`Response`.
ProcessRequest = Callable[[Request], "Response | None"]
#: ``handler(ws)``: run in the connection's thread.
Handler = Callable[["ServerConnection"], Any]


class ServerConnection(Connection):
    """A server-side connection of the blocking API: what ``handler(ws)`` receives.

    Besides :class:`~shakehands.sync.connection.Connection`'s API: :attr:`request` (path,
    headers, origin, the remote address) and :attr:`subprotocol`.
    """

    protocol: ServerProtocol

    @property
    def path_params(self) -> dict[str, Any]:
        """The path parameters of the :class:`~shakehands.Router` route that matched:
        ``{"name": "lobby"}`` for ``/rooms/{name}``; ``{}`` without a router."""
        return path_params_of(self.request)


class ServerOptions:
    """What every connection of one blocking server shares: its options and its TLS context.

    Built by :func:`serve` from its keyword arguments. ``config`` is the
    :class:`~shakehands.protocol.config.ServerConfig` (every option, validated); ``ssl`` the
    ``ssl.SSLContext`` that wraps each accepted socket, or ``None``.
    """

    __slots__ = ("config", "ssl")

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        ssl: ssl_module.SSLContext | None = None,
        **options: Unpack[ServerKeywords],
    ) -> None:
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError(f"ssl must be an ssl.SSLContext, got {ssl!r}")
        if config is None:
            config = server_config(**options)
        elif options:
            raise TypeError("pass a ServerConfig or options as keyword arguments, not both")
        if config.http2:
            raise ValueError("http2=True: only the asyncio servers speak HTTP/2 (docs/http2.md)")
        self.config = config
        self.ssl = ssl

    def new_protocol(self) -> ServerProtocol:
        """A fresh sans-I/O server connection with these options."""
        return new_server_protocol(self.config, secure=self.ssl is not None)


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


class Server:
    """A listening blocking WebSocket server; what :func:`serve` returns.

    Use as ``with serve(...) as server: server.serve_forever()``; :meth:`shutdown` (from another
    thread, or a handler) stops it; leaving the ``with`` block closes every connection (1001).
    """

    def __init__(self, sock: socket.socket, handler: Handler, options: ServerOptions) -> None:
        self.socket = sock
        self.handler = handler
        self.options = options
        #: The options of this server, shared by all its connections.
        self.config = options.config
        self._connections: set[ServerConnection] = set()
        self._threads: set[threading.Thread] = set()
        self._handshaking: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop_r, self._stop_w = socket.socketpair()
        self._stopping = False
        self._stopped = threading.Event()
        self._stopped.set()
        #: The Unix socket file :func:`unix_serve` created, removed by :meth:`shutdown`.
        self._socket_file: UnixSocketFile | None = None

    @property
    def close_timeout(self) -> float | None:
        """The ``close_timeout`` option of this server's connections."""
        return self.config.close_timeout

    def new_protocol(self) -> ServerProtocol:
        """A fresh sans-I/O server connection with this server's options."""
        return self.options.new_protocol()

    @property
    def connections(self) -> set[ServerConnection]:
        """The open connections (a copy)."""
        with self._lock:
            return set(self._connections)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening socket (a tuple, as for the asyncio server)."""
        return (self.socket,)

    @property
    def port(self) -> int:
        """The listening port (useful with ``port=0``).

        Raises:
            ValueError: a server on a Unix socket (``unix_serve``) has no port.
        """
        address = self.sockets[0].getsockname()
        if isinstance(address, (str, bytes)):
            raise ValueError(f"a Unix socket server has no port (it listens on {address!r})")
        return int(address[1])

    def serve_forever(
        self, *, stop_signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)
    ) -> None:
        """Accept connections until :meth:`shutdown`, or one of ``stop_signals`` arrives; each
        connection gets its own thread.

        SIGINT (Ctrl-C) and SIGTERM (``kill``, ``docker stop``) shut the server down
        gracefully: this stops accepting, then runs :meth:`shutdown` (every client gets a 1001
        close frame) and returns, so that the program exits normally. The handlers are
        installed for the duration of the call only when it runs in the main thread (the only
        one where Python delivers signals), and only for a signal that still has its default
        handler: a handler the program set itself, or an ignored signal, is left alone. Pass
        ``stop_signals=()`` to handle signals yourself.
        """
        signalled = False

        def stop(signum: int, frame: object) -> None:
            nonlocal signalled
            signalled = True
            with contextlib.suppress(OSError):
                self._stop_w.send(b"x")

        previous: list[tuple[int, Any]] = []
        if threading.current_thread() is threading.main_thread():
            for signum in stop_signals:
                handler = signal.getsignal(signum)
                if handler in (signal.SIG_DFL, signal.default_int_handler, None):
                    previous.append((signum, signal.signal(signum, stop)))
        try:
            self._accept_until_stopped()
        finally:
            for signum, handler in previous:
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if signalled and not self._stopping:
            self.shutdown()

    def _accept_until_stopped(self) -> None:
        self._stopped.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ)
                selector.register(self._stop_r, selectors.EVENT_READ)
                while not self._stopping:
                    for key, _ in selector.select():
                        if key.fileobj is self._stop_r:
                            return
                        try:
                            sock, _ = self.socket.accept()
                        except OSError:
                            continue
                        thread = threading.Thread(
                            target=self._run_connection, args=(sock,), daemon=True
                        )
                        with self._lock:
                            self._threads.add(thread)
                        thread.start()
        finally:
            self._stopped.set()

    def _run_connection(self, sock: socket.socket) -> None:
        try:
            with self._lock:
                if self._stopping:
                    sock.close()
                    return
                limit = self.config.max_connections
                # Handshakes count, as in the asyncio servers: beyond the limit, a 503.
                busy = limit is not None and (
                    len(self._connections) + len(self._handshaking) >= limit
                )
                self._handshaking.add(sock)
            try:
                connection = server_handshake(sock, self.options, busy=busy)
            except (InvalidHandshake, TimeoutError, OSError) as exc:
                logger.info("handshake failed: %s", exc)
                return
            finally:
                with self._lock:
                    self._handshaking.discard(sock)
            if connection is None:
                return
            with self._lock:
                stopping = self._stopping
                if not stopping:
                    self._connections.add(connection)
            if stopping:
                connection.close(CloseCode.GOING_AWAY, "server shutting down")
                return
            try:
                self.handler(connection)
            except ConnectionClosed:
                pass
            except Exception:
                logger.exception("connection handler failed")
                connection.close(CloseCode.INTERNAL_ERROR)
            connection.close()
            with self._lock:
                self._connections.discard(connection)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def shutdown(
        self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down"
    ) -> None:
        """Stop accepting; close every connection with ``code`` (1001 by default) and wait.

        Every connection gets its close frame at once (after what ``send()`` accepted before);
        connections whose peer does not answer within ``close_timeout`` are aborted, so this
        returns within about ``close_timeout`` whatever the peers do (handler threads still
        running then are left behind: they are daemon threads).
        """
        with self._lock:
            already = self._stopping
            self._stopping = True
            connections = list(self._connections)
            # Handshakes in progress are dropped, not waited for (up to open_timeout).
            for sock in self._handshaking:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        if not already:
            with contextlib.suppress(OSError):
                self._stop_w.send(b"x")
        self._stopped.wait()
        deadline = time.monotonic() + self.config.close_limit
        # One thread queues (and starts writing) every close frame, waiting for no lock: a
        # connection whose core lock is busy gets a request that its busy thread applies. The
        # old way, a closer thread per connection, each waiting for a lock held by a handler
        # blocked in a write, made a thousand threads wait for the GIL together (shutdown took
        # 5 to 40 s with 1 000 busy clients).
        pending = [c for c in connections if not c._try_start_close(code, reason)]
        for connection in pending:
            connection._start_close(code, reason)  # the lock's holder is not waiting for I/O
        for connection in connections:
            connection.wait_closed(max(0.0, deadline - time.monotonic()))
        # The readers abort at their own close deadline; the rest are aborted from here.
        stragglers = [c for c in connections if not c._reader_done.is_set()]
        for connection in stragglers:
            connection._abort()
        for connection in stragglers:
            connection.wait_closed(max(0.0, deadline + 1.0 - time.monotonic()))
        with self._lock:
            threads = list(self._threads)
        # Handlers see their connection closed; give them a moment to return.
        end = time.monotonic() + 1.0
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, end - time.monotonic()))
        self.socket.close()
        if self._socket_file is not None:
            self._socket_file.remove()
        self._stop_r.close()
        self._stop_w.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._stopping:
            self.shutdown()


def _routed(router: Router, options: ServerKeywords) -> Handler:
    """The handler that runs ``router``'s endpoints; its hook goes first in ``options``."""
    for route in router.routes:
        check_handler(route.endpoint, coroutine=False, expected="def handler(ws): ...")
    options["process_request"] = router.with_process_request(options.get("process_request"))

    def run_route(ws: ServerConnection) -> None:
        router.endpoint_for(ws.request)(ws)

    return run_route


def serve(
    handler: Handler | Router,
    host: str | None = None,
    port: int | None = None,
    *,
    sock: socket.socket | None = None,
    backlog: int = 128,
    ssl: ssl_module.SSLContext | None = None,
    **options: Unpack[ServerKeywords],
) -> Server:
    """Listen for WebSocket connections and run ``handler(ws)`` for each one, in its thread.

    Args:
        handler: a function taking a :class:`ServerConnection`; the connection closes (1000)
            when it returns, or with 1011 if it raises. Checked here: an ``async def`` or a
            function of another number of arguments raises ``TypeError``. Or a
            :class:`~shakehands.Router` of such functions: its ``process_request`` runs first
            (404 for paths it does not route), then yours, if any.
        host, port: where to listen (``port=0`` picks a free port: see :attr:`Server.port`).
        sock: an already bound listening socket, instead of ``host`` and ``port``.
        process_request: ``process_request(request)`` sees every request before any answer and
            may return a :class:`~shakehands.Response` to answer it instead of upgrading.
        origins: allowed ``Origin`` values (``None`` in the list allows a missing header);
            others get 403.
        subprotocols, select_subprotocol: subprotocol negotiation.
        max_message_size: largest message (``None`` for no limit); larger messages: 1009.
        max_frame_size, max_line, max_headers, max_header_bytes: as for the asyncio server.
        max_queue: received messages buffered before reading from the socket pauses.
        ping_interval, ping_timeout: keepalive (``None`` disables).
        open_timeout: seconds to complete the handshake, TLS included.
        close_timeout: seconds to wait for the closing handshake, and for the peer's EOF after
            a refusal or a failure.
        write_limit: bytes buffered for the peer above which ``send()`` waits and pongs are
            deferred.
        compression: ``"deflate"``, a :class:`~shakehands.DeflateOptions`, or ``None``.
        ssl: an ``ssl.SSLContext`` to serve ``wss://``.
        legacy_hixie76: also accept draft-hixie-76 clients (the seed's protocol; see
            :mod:`shakehands.protocol.hixie76`).
        max_connections: most connections held at once, handshakes included; beyond it a
            request gets ``503 Service Unavailable`` with ``Retry-After: 1``.
    Every option is defined, with its default, in
    :class:`~shakehands.protocol.config.ServerConfig` (and the README's options table).

    Example::

        from shakehands.sync import serve

        def echo(ws):
            for message in ws:
                ws.send(message)

        with serve(echo, "127.0.0.1", 8765) as server:
            server.serve_forever()
    """
    if isinstance(handler, Router):
        handler = _routed(handler, options)
    ws_options = ServerOptions(ssl=ssl, **options)
    check_handler(handler, coroutine=False, expected="def handler(ws): ...")
    if sock is None:
        sock = socket.create_server(
            (host or "", port or 0),
            backlog=backlog,
            reuse_port=False,
            dualstack_ipv6=False,
        )
    return Server(sock, handler, ws_options)


def unix_serve(
    handler: Handler | Router,
    path: str | os.PathLike[str] | None = None,
    *,
    sock: socket.socket | None = None,
    backlog: int = 128,
    ssl: ssl_module.SSLContext | None = None,
    **options: Unpack[ServerKeywords],
) -> Server:
    """:func:`serve` on a Unix domain socket: same handler, same options, no host and port.

    Args:
        handler: as for :func:`serve`.
        path: the socket file to create. One left by a server that no longer runs (a crash,
            ``kill -9``) is replaced; if a server still listens there, ``OSError``
            (``EADDRINUSE``); a path that exists and is not a socket: ``FileExistsError``.
            The file is removed by :meth:`Server.shutdown` (leaving the ``with`` block). A
            Linux abstract name (``"\\0name"``) has no file.
        sock: an already bound and listening ``AF_UNIX`` socket, instead of ``path`` (its
            file is yours to remove).
        backlog, ssl, options: as for :func:`serve`.

    Example::

        from shakehands.sync import unix_serve

        with unix_serve(echo, "/tmp/echo.sock") as server:
            server.serve_forever()
    """
    if (path is None) == (sock is None):
        raise TypeError("unix_serve needs a path or a sock: exactly one of them")
    if sock is not None and sock.family != socket.AF_UNIX:
        raise ValueError(f"sock must be an AF_UNIX socket, got {sock!r}")
    if isinstance(handler, Router):
        handler = _routed(handler, options)
    ws_options = ServerOptions(ssl=ssl, **options)
    check_handler(handler, coroutine=False, expected="def handler(ws): ...")
    socket_file = None
    if sock is None:
        assert path is not None
        sock, socket_file = bind_unix_socket(path, backlog)
    server = Server(sock, handler, ws_options)
    server._socket_file = socket_file
    return server
