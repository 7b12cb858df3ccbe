"""The asyncio client: ``async with connect("ws://127.0.0.1:12345/") as ws``.

:class:`ClientConnection` sends the upgrade request built by the sans-I/O
:class:`~shakehands.protocol.client.ClientProtocol`, waits (at most ``open_timeout``) for the
server's answer, and then offers the same coroutine API as server connections.

:class:`connect` also follows redirects and, iterated (``async for ws in connect(uri)``),
reconnects with backoff; :class:`unix_connect` is the same over a Unix domain socket. The one
place that opens the byte stream (TCP or Unix, then TLS) is :meth:`connect._open_transport`.
The policies (which redirects, which failures are worth a retry, the backoff) are in the core:
:mod:`shakehands.protocol.client`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, TypeVar, Unpack

from .._reconnect import Reconnection
from ..client_errors import raise_unreachable, refused, tls_error
from ..protocol.client import (
    REDIRECT_STATUSES,
    Backoff,
    ClientProtocol,
    WebSocketURI,
    follow_redirect,
    parse_uri,
    redact,
    wrong_scheme,
)
from ..protocol.config import (
    ClientConfig,
    ClientOptions,
    UnixClientOptions,
    client_config,
    unix_client_config,
)
from ..protocol.connection import State
from ..protocol.errors import (
    HandshakeInterrupted,
    HostNotFound,
    InvalidHandshake,
    InvalidStatus,
    OpenTimeout,
)
from ..protocol.handshake import Response
from ..protocol.proxy import Proxy, select_proxy
from .connection import WebSocketConnection
from .proxy import create_proxy_connection

__all__ = ["connect", "unix_connect", "ClientConnection"]

logger = logging.getLogger("shakehands.client")

_P = TypeVar("_P", bound=asyncio.BaseProtocol)
_T = TypeVar("_T")


class ClientConnection(WebSocketConnection):
    """A client connection of the coroutine API (what :func:`connect` gives)."""

    protocol: ClientProtocol

    __slots__ = ("handshake_done", "uri")

    def __init__(self, protocol: ClientProtocol, config: ClientConfig) -> None:
        super().__init__(protocol, config)
        self.request = protocol.request
        self.handshake_done: asyncio.Future[None] = self.loop.create_future()
        #: The URI this connection was opened to: the last one after redirects.
        self.uri = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.protocol.send_request()
        self._flush()

    def _on_handshake_event(self, event: object) -> None:
        if isinstance(event, Response):
            self.response = event
            self.subprotocol = self.protocol.subprotocol
            self._start_keepalive()
            if not self.handshake_done.done():
                self.handshake_done.set_result(None)

    def _process(self) -> None:
        super()._process()
        exc = self.protocol.handshake_exc
        if exc is not None and not self.handshake_done.done():
            self.handshake_done.set_exception(exc)

    def _on_connection_lost(self) -> None:
        super()._on_connection_lost()
        if not self.handshake_done.done():
            exc = self.protocol.handshake_exc or HandshakeInterrupted(
                "connection closed during the handshake"
            )
            self.handshake_done.set_exception(exc)
            self.handshake_done.exception()


#: Seconds at most for the TLS probe of a ws:// server that closed without a word.
_PROBE_TIMEOUT = 2.0


async def _speaks_tls(host: str, port: int) -> bool:
    """Whether ``host:port`` completes a TLS handshake (its certificate unchecked: nothing is
    sent over the connection, which is closed at once)."""
    context = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl_module.CERT_NONE
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            transport, _ = await asyncio.get_running_loop().create_connection(
                asyncio.Protocol, host, port, ssl=context
            )
    except (OSError, TimeoutError):
        return False
    transport.abort()
    return True


class _Attempt:
    """What one connection attempt is doing, so that a timeout can say so."""

    __slots__ = ("phase",)

    def __init__(self) -> None:
        self.phase = "TCP connect"


async def _tcp_connect(host: str, port: int) -> socket.socket:
    """A connected, non-blocking TCP socket to ``host:port`` (each address in turn).

    Raises:
        HostNotFound: ``host`` does not resolve.
        ConnectionRefused: every address refused the connection.
        OSError: another network error (of the last address tried).
    """
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise HostNotFound(f"cannot resolve {host!r}: {exc.strerror}", exc.errno) from exc
    errors: list[OSError] = []
    for family, type_, proto, _, address in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise_unreachable(host, port, errors)


class connect:  # noqa: N801 - used like a function, as in `async with connect(uri)`
    """Open a client connection: await it, use it as an async context manager, or iterate it
    to reconnect whenever the connection is lost.

    Args:
        uri: ``ws://host[:port]/path`` or ``wss://...``; ``ws://user:password@host/`` sends
            ``Authorization: Basic`` (unless ``extra_headers`` has an ``Authorization``).
        origin: an ``Origin`` header to send.
        subprotocols: subprotocols to offer, in order of preference.
        extra_headers: more request headers.
        open_timeout: seconds for DNS, TCP, TLS and the handshake together (each redirect
            gets its own).
        ssl: an ``ssl.SSLContext`` for ``wss://`` (default: the system's trust store).
        server_hostname: the name to check the server's certificate against (default: the
            URI's host).
        max_redirects: redirects (301, 302, 303, 307, 308) followed at most; 0 follows none.
        proxy: ``True``: the proxy of the environment, as curl picks it
            (``wss_proxy``/``https_proxy``/..., ``no_proxy``: see ``docs/proxies.md``), for
            the URI and for each redirect; a URL (``http://``, ``https://``,
            ``socks5[h]://``, ``socks4[a]://``): that proxy; ``None``: no proxy. The proxy's
            tunnel counts in ``open_timeout``.
        http2: ``True``: for ``wss://``, a WebSocket over HTTP/2 (RFC 8441 extended CONNECT)
            when the server advertises it, else HTTP/1.1; needs the ``http2`` extra. Many
            WebSockets over one HTTP/2 connection: :func:`shakehands.http2.connect_session`.
            See ``docs/http2.md``.
        backoff_initial_delay, backoff_factor, backoff_max_delay: when iterated, the wait
            before the n-th retry is random in ``[0, min(max, initial * factor ** n)]``
            (see :class:`~shakehands.protocol.client.Backoff`).
        max_message_size, max_frame_size, max_queue, write_limit, ping_interval, ping_timeout,
        close_timeout, compression: as for :func:`~shakehands.serve`.

    Every option but ``ssl`` and ``server_hostname`` is defined, with its default and its
    validation, in :class:`~shakehands.protocol.config.ClientConfig` (and the README's
    options table).

    ``async for ws in connect(uri)`` yields a new connection each time the previous one is
    lost: it retries (logging each attempt to the ``shakehands.client`` logger) after connection
    refused, reset or timed out and 5xx answers, and connects again after the server closed
    with 1001, 1006, 1011, 1012 or 1013; it raises at once on 4xx answers, invalid URIs, TLS
    certificate failures and redirect errors. Another close code from the server ends the
    iteration; so does a ``break``. Starting the next iteration while the connection is open
    closes it and connects again. See ``docs/client.md``.

    Raises:
        InvalidURI: the URI is not ws:// or wss://.
        HostNotFound: the host name does not resolve.
        ConnectionRefused: nothing listens at the host and port.
        OpenTimeout: ``open_timeout`` ran out; its ``phase`` says during what.
        TLSVerificationError: the server's certificate was rejected (the reason is in the
            message and ``verify_message``).
        NotWebSocketServer: a plain HTTP answer (2xx): not a WebSocket endpoint.
        HandshakeInterrupted: the server closed the connection before answering in full.
        InvalidStatus: the server refused the upgrade (it carries the response).
        RedirectError: a redirect that cannot be followed (:class:`~shakehands.RedirectLoop`,
            :class:`~shakehands.TooManyRedirects`, :class:`~shakehands.InsecureRedirect`).
        InvalidHandshake: any other wrong answer; :class:`~shakehands.InvalidResponse` also for
            a ws:// URI of a TLS server or a wss:// URI of a plain one (it names the scheme).
        ProxyError: the proxy failed; :class:`~shakehands.InvalidProxyStatus` carries the
            status of a refusal (407, 403, ...).
        OSError: another network error.

    Example::

        async with connect("ws://127.0.0.1:12345/") as ws:
            print(await ws.recv())

        async for ws in connect("ws://127.0.0.1:12345/"):
            try:
                async for message in ws:
                    print(message)
            except ConnectionClosed:
                continue
    """

    def __init__(
        self,
        uri: str,
        *,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self._setup(uri, ssl, server_hostname, client_config(**options), unix_path=None)

    def _setup(
        self,
        uri: str,
        ssl: ssl_module.SSLContext | None,
        server_hostname: str | None,
        config: ClientConfig,
        unix_path: str | None,
    ) -> None:
        """Check the arguments and keep them (before any I/O: a bad one fails at once)."""
        self.uri = uri
        self.wsuri = parse_uri(uri)
        #: The options (validated when ``connect`` is called, before any I/O).
        self.config = config
        self.open_timeout = config.open_timeout
        if self.wsuri.secure and ssl is None:
            ssl = ssl_module.create_default_context()
        elif not self.wsuri.secure and ssl is not None:
            raise ValueError("an ssl context needs a wss:// URI")
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.max_redirects = config.max_redirects
        #: The delays between reconnection attempts.
        self.backoff = Backoff.from_config(config)
        #: A Unix domain socket to connect to instead of the URI's host and port.
        self.unix_path = unix_path
        #: The proxy this connection goes through (``None``: direct); redirects choose again.
        #: Chosen now: a bad proxy URL in the environment fails before any I/O.
        self.proxy = select_proxy(config.proxy, self.wsuri.host, self.wsuri.port, self.wsuri.secure)
        self.connection: ClientConnection | None = None
        if config.http2:
            try:
                import h2.connection  # noqa: F401 - only to know whether it is there
            except ImportError:
                raise ImportError(
                    "http2=True needs the h2 package: pip install 'shakehands[http2]'"
                ) from None
        # (host, port) that chose h2 without extended CONNECT: HTTP/1.1 from then on.
        self._http11_only: set[tuple[str, int]] = set()

    def _over_http2(self, wsuri: WebSocketURI) -> bool:
        """Whether to try HTTP/2 (``http2=True``, ``wss://``, direct; see docs/http2.md)."""
        return (
            bool(self.config.http2)
            and wsuri.secure
            and self.unix_path is None
            and (wsuri.host, wsuri.port) not in self._http11_only
            and select_proxy(self.config.proxy, wsuri.host, wsuri.port, True) is None
        )

    def _ssl_for(self, wsuri: WebSocketURI) -> tuple[ssl_module.SSLContext | None, str]:
        """The TLS context and server name for ``wsuri`` (a redirect may change the scheme
        or the host)."""
        if not wsuri.secure:
            return None, wsuri.host
        context = self.ssl or ssl_module.create_default_context()
        if wsuri.host == self.wsuri.host and self.server_hostname is not None:
            return context, self.server_hostname
        return context, wsuri.host

    async def _open_transport(
        self,
        factory: Callable[[], _P],
        wsuri: WebSocketURI,
        attempt: _Attempt,
        *,
        alpn: list[str] | None = None,
    ) -> _P:
        """Open the byte stream (TCP or Unix, then TLS for wss://) and the connection on it.

        The one place that decides how the client reaches the server. ``alpn``: the TLS
        context's ALPN offers (with ``http2=True``, ``http/1.1`` only unless given).
        """
        loop = asyncio.get_running_loop()
        if self.unix_path is None:
            proxy = select_proxy(self.config.proxy, wsuri.host, wsuri.port, wsuri.secure)
            if proxy is not None:
                return await self._open_proxied(factory, wsuri, attempt, proxy)
        attempt.phase = "TCP connect"
        if self.unix_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, self.unix_path)
            except ConnectionRefusedError as exc:
                sock.close()
                raise refused(self.unix_path) from exc
            except BaseException:
                sock.close()
                raise
        else:
            sock = await _tcp_connect(wsuri.host, wsuri.port)
        context, server_hostname = self._ssl_for(wsuri)
        kwargs: dict[str, Any] = {}
        if context is not None and (alpn is not None or self.config.http2):
            context.set_alpn_protocols(alpn or ["http/1.1"])
        if context is not None:
            attempt.phase = "TLS handshake"
            kwargs["ssl"] = context
            kwargs["server_hostname"] = server_hostname
        try:
            _, connection = await loop.create_connection(factory, sock=sock, **kwargs)
        except ssl_module.SSLError as exc:
            sock.close()
            if (error := tls_error(exc, wsuri, server_hostname)) is None:
                raise
            raise error from exc
        except BaseException:
            sock.close()
            raise
        attempt.phase = "WebSocket handshake"
        return connection

    async def _open_proxied(
        self,
        factory: Callable[[], _P],
        wsuri: WebSocketURI,
        attempt: _Attempt,
        proxy: Proxy,
    ) -> _P:
        """:meth:`_open_transport` through ``proxy`` (see ``docs/proxies.md``)."""
        context, server_hostname = self._ssl_for(wsuri)
        if context is not None and self.config.http2:
            context.set_alpn_protocols(["http/1.1"])
        attempt.phase = f"proxy tunnel through {proxy.url}"
        try:
            _, connection = await create_proxy_connection(
                factory, proxy, wsuri.host, wsuri.port, ssl=context, server_hostname=server_hostname
            )
        except ssl_module.SSLError as exc:
            if (error := tls_error(exc, wsuri, server_hostname)) is None:
                raise
            raise error from exc
        attempt.phase = "WebSocket handshake"
        return connection

    async def _handshake(self, uri: str) -> ClientConnection:
        """One request to ``uri``, within ``open_timeout``."""
        wsuri = parse_uri(uri)
        attempt = _Attempt()

        def factory() -> ClientConnection:
            return ClientConnection(ClientProtocol(uri, self.config), self.config)

        async def handshake() -> ClientConnection:
            if self._over_http2(wsuri):
                from ..http2.client import open_connection

                connection = await open_connection(self, factory, uri, attempt)
            else:
                connection = await self._open_transport(factory, wsuri, attempt)
            try:
                await connection.handshake_done
            except BaseException as exc:
                connection.transport.abort()
                if (
                    isinstance(exc, (InvalidHandshake, OSError))
                    and not wsuri.secure
                    and self.unix_path is None
                    # A direct probe would go around the proxy.
                    and select_proxy(self.config.proxy, wsuri.host, wsuri.port, False) is None
                    and connection.protocol.nothing_received
                    and await _speaks_tls(wsuri.host, wsuri.port)
                ):
                    raise wrong_scheme(wsuri, server_speaks_tls=True) from exc
                raise
            return connection

        return await self._within_open_timeout(handshake(), uri, attempt)

    async def _within_open_timeout(
        self, opening: Coroutine[Any, Any, _T], uri: str, attempt: _Attempt
    ) -> _T:
        """Await ``opening`` within ``open_timeout``; past it, :class:`OpenTimeout` (its phase
        from ``attempt``)."""
        try:
            return await asyncio.wait_for(opening, self.open_timeout)
        except TimeoutError as exc:
            if isinstance(exc, OpenTimeout):
                raise
            raise OpenTimeout(
                f"opening handshake with {redact(uri)} timed out during the {attempt.phase} "
                f"(open_timeout={self.open_timeout} s)",
                attempt.phase,
            ) from None

    async def _open(self) -> ClientConnection:
        uri = self.uri
        visited = [uri]
        while True:
            try:
                connection = await self._handshake(uri)
            except InvalidStatus as exc:
                response: Response = exc.response
                if response.status not in REDIRECT_STATUSES or self.max_redirects == 0:
                    raise
                uri = follow_redirect(uri, response, visited, self.max_redirects)
                logger.info("HTTP %d: redirected to %s", response.status, redact(uri))
                continue
            connection.uri = uri
            self.connection = connection
            return connection

    def __await__(self) -> Generator[Any, None, ClientConnection]:
        return self._open().__await__()

    async def __aenter__(self) -> ClientConnection:
        return await self._open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.connection is not None:
            await self.connection.close()

    async def __aiter__(self) -> AsyncIterator[ClientConnection]:
        """Connect, yield the connection, and connect again when it is lost (see above)."""
        where = redact(self.uri) if self.unix_path is None else f"{self.unix_path} (unix)"
        retry = Reconnection(where, self.backoff)
        while True:
            retry.connecting()
            try:
                connection = await self._open()
            except Exception as exc:
                delay = retry.failed(exc)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            retry.connected()
            try:
                yield connection
            except BaseException:  # GeneratorExit: the caller broke out of the loop
                await connection.close()
                raise
            # The caller asks for the next connection.
            was_open = connection.state is State.OPEN
            await connection.close()
            delay = retry.lost(was_open, connection.close_code)
            if delay is None:
                return
            if delay:
                await asyncio.sleep(delay)


class unix_connect(connect):  # noqa: N801 - used like a function, as connect
    """:class:`connect` over a Unix domain socket at ``path`` (awaited, ``async with``, or
    iterated to reconnect, as :class:`connect`).

    Args:
        path: the socket's path in the file system.
        uri: the URI of the request (its host goes into ``Host``, its path and query into the
            request line; ``wss://`` runs TLS over the socket); by default ``ws://localhost/``.
        **kwargs: as for :class:`connect`, but ``proxy`` (``TypeError``: a Unix domain socket
            is reached directly).

    Example::

        async with unix_connect("/run/app.sock") as ws:
            await ws.send("hello")
    """

    def __init__(
        self,
        path: str,
        uri: str = "ws://localhost/",
        *,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        **options: Unpack[UnixClientOptions],
    ) -> None:
        config = unix_client_config(**options)
        self._setup(uri, ssl, server_hostname, config, unix_path=str(path))
