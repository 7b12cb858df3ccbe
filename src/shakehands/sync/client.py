"""The blocking client: ``with connect("ws://127.0.0.1:12345/") as ws: print(ws.recv())``.

:func:`connect` opens the TCP (and TLS) connection, sends the request built by the sans-I/O
:class:`~shakehands.protocol.client.ClientProtocol`, reads the server's answer within
``open_timeout``, follows redirects, and returns a :class:`ClientConnection` with the blocking
API. :func:`unix_connect` does the same over a Unix domain socket; :func:`reconnect` yields a
new connection each time the last one is lost. The one place that opens the byte stream (TCP
or Unix, then TLS) is :func:`_open_transport`. The policies (which redirects, which failures
are worth a retry, the backoff) are in the core: :mod:`shakehands.protocol.client`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl as ssl_module
import threading
import time
from collections.abc import Iterator
from typing import Any, Unpack

from .._reconnect import Reconnection
from ..client_errors import raise_unreachable, refused, tls_error, tls_verification_error
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
    HostNotFound,
    InvalidHandshake,
    InvalidResponse,
    InvalidStatus,
    OpenTimeout,
)
from ..protocol.proxy import Proxy, ProxyArgument, select_proxy
from .connection import Connection
from .proxy import open_tunnel

__all__ = ["connect", "unix_connect", "reconnect", "ClientConnection"]

logger = logging.getLogger("shakehands.client")


class ClientConnection(Connection):
    """A client connection of the blocking API (what :func:`connect` returns)."""

    protocol: ClientProtocol
    #: The URI this connection was opened to: the last one after redirects.
    uri: str = ""

    def __enter__(self) -> ClientConnection:
        return self


#: Seconds at most for the TLS probe of a ws:// server that closed without a word.
_PROBE_TIMEOUT = 2.0


def _speaks_tls(host: str, port: int) -> bool:
    """Whether ``host:port`` completes a TLS handshake (its certificate unchecked: nothing is
    sent over the connection, which is closed at once)."""
    context = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl_module.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), _PROBE_TIMEOUT) as sock,
            context.wrap_socket(sock),
        ):
            return True
    except OSError:
        return False


class _Attempt:
    """One connection attempt: its deadline, and what it is doing (for the timeout's message)."""

    def __init__(self, uri: str, open_timeout: float | None) -> None:
        self.uri = uri
        self.open_timeout = open_timeout
        self.deadline = None if open_timeout is None else time.monotonic() + open_timeout
        self.phase = "TCP connect"

    def timed_out(self) -> OpenTimeout:
        """The error for a timeout now."""
        return OpenTimeout(
            f"opening handshake with {redact(self.uri)} timed out during the {self.phase} "
            f"(open_timeout={self.open_timeout} s)",
            self.phase,
        )

    def remaining(self) -> float | None:
        """Seconds left (``None``: no limit).

        Raises:
            OpenTimeout: none left.
        """
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.timed_out()
        return left


def _resolve(host: str, port: int, attempt: _Attempt) -> list[Any]:
    """``getaddrinfo`` within the attempt's time: a name is looked up in a daemon thread, as
    the resolver takes no timeout (an address literal needs no lookup, nor does no limit).

    Raises:
        socket.gaierror: the lookup failed.
        OpenTimeout: the time ran out first (phase ``"DNS lookup"``).
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if attempt.deadline is None:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    attempt.phase = "DNS lookup"
    result: list[Any] = []

    def lookup() -> None:
        try:
            result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the caller
            result.append(exc)

    thread = threading.Thread(target=lookup, name=f"shakehands-dns-{host}", daemon=True)
    thread.start()
    thread.join(attempt.remaining())
    if not result:
        raise attempt.timed_out()
    if isinstance(result[0], BaseException):
        raise result[0]
    infos: list[Any] = result[0]
    return infos


def _tcp_connect(host: str, port: int, attempt: _Attempt) -> socket.socket:
    """A connected TCP socket to ``host:port`` (each address in turn).

    Raises:
        HostNotFound: ``host`` does not resolve.
        ConnectionRefused: every address refused the connection.
        OpenTimeout: the attempt's time ran out.
        OSError: another network error (of the last address tried).
    """
    try:
        infos = _resolve(host, port, attempt)
    except socket.gaierror as exc:
        raise HostNotFound(f"cannot resolve {host!r}: {exc.strerror}", exc.errno) from exc
    attempt.phase = "TCP connect"
    errors: list[OSError] = []
    for family, type_, proto, _, address in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.settimeout(attempt.remaining())
            sock.connect(address)
        except TimeoutError:
            sock.close()
            raise attempt.timed_out() from None
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise_unreachable(host, port, errors)


def _open_transport(
    wsuri: WebSocketURI,
    attempt: _Attempt,
    ssl: ssl_module.SSLContext | None,
    server_hostname: str,
    unix_path: str | None,
    proxy: ProxyArgument,
) -> socket.socket:
    """Open the byte stream: TCP or Unix (or a proxy's tunnel), then TLS for wss://. The one
    place that decides how the client reaches the server."""
    attempt.phase = "TCP connect"
    if unix_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(attempt.remaining())
            sock.connect(unix_path)
        except ConnectionRefusedError as exc:
            sock.close()
            raise refused(unix_path) from exc
        except BaseException:
            sock.close()
            raise
    elif (via := select_proxy(proxy, wsuri.host, wsuri.port, wsuri.secure)) is not None:
        sock = _tunnel(via, wsuri, attempt, tls_inside=ssl is not None)
    else:
        sock = _tcp_connect(wsuri.host, wsuri.port, attempt)
    if ssl is None:
        return sock
    attempt.phase = "TLS handshake"
    try:
        sock.settimeout(attempt.remaining())
        return ssl.wrap_socket(sock, server_hostname=server_hostname)
    except ssl_module.SSLError as exc:
        sock.close()
        if (error := tls_error(exc, wsuri, server_hostname)) is None:
            raise
        raise error from exc
    except TimeoutError:
        sock.close()
        raise attempt.timed_out() from None
    except BaseException:
        sock.close()
        raise


def _tunnel(
    proxy: Proxy, wsuri: WebSocketURI, attempt: _Attempt, tls_inside: bool
) -> socket.socket:
    """A socket to the server through ``proxy`` (see ``docs/proxies.md``)."""
    attempt.phase = f"proxy tunnel through {proxy.url}"
    try:
        return open_tunnel(proxy, wsuri.host, wsuri.port, attempt.remaining, tls_inside=tls_inside)
    except OpenTimeout:
        raise
    except TimeoutError:
        raise attempt.timed_out() from None
    except ssl_module.SSLCertVerificationError as exc:
        raise tls_verification_error(exc, proxy.host) from exc


def _handshake(
    uri: str,
    config: ClientConfig,
    ssl: ssl_module.SSLContext | None,
    server_hostname: str,
    unix_path: str | None,
) -> ClientConnection:
    """One request to ``uri``, within ``open_timeout``."""
    proxy = config.proxy
    wsuri = parse_uri(uri)
    attempt = _Attempt(uri, config.open_timeout)
    protocol = ClientProtocol(uri, config)
    sock = _open_transport(wsuri, attempt, ssl, server_hostname, unix_path, proxy)
    attempt.phase = "WebSocket handshake"
    try:
        protocol.send_request()
        sock.settimeout(attempt.remaining())
        sock.sendall(b"".join(protocol.data_to_send()))
        while protocol.response is None and protocol.handshake_exc is None:
            sock.settimeout(attempt.remaining())
            data = sock.recv(2**16)
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        if protocol.response is None:  # pragma: no cover - the core sets one or the other
            raise InvalidResponse("no response from the server")
    except OpenTimeout:
        sock.close()
        raise
    except TimeoutError:
        sock.close()
        raise attempt.timed_out() from None
    except BaseException as exc:
        sock.close()
        if (
            isinstance(exc, (InvalidHandshake, OSError))
            and not wsuri.secure
            and unix_path is None
            # A direct probe would go around the proxy.
            and select_proxy(proxy, wsuri.host, wsuri.port, False) is None
            and protocol.nothing_received
            and _speaks_tls(wsuri.host, wsuri.port)
        ):
            raise wrong_scheme(wsuri, server_speaks_tls=True) from exc
        raise
    connection = ClientConnection(sock, protocol, config)
    connection.request = protocol.request
    connection.response = protocol.response
    connection.subprotocol = protocol.subprotocol
    connection.uri = uri
    connection._start()
    return connection


def _open(
    uri: str,
    ssl: ssl_module.SSLContext | None,
    server_hostname: str | None,
    unix_path: str | None,
    config: ClientConfig,
) -> ClientConnection:
    """:func:`connect`'s work, redirects included, once the arguments are checked."""
    first = parse_uri(uri)
    visited = [uri]
    while True:
        wsuri = parse_uri(uri)
        context = (ssl or ssl_module.create_default_context()) if wsuri.secure else None
        name = server_hostname if server_hostname and wsuri.host == first.host else wsuri.host
        try:
            return _handshake(uri, config, context, name, unix_path)
        except InvalidStatus as exc:
            response = exc.response
            if response.status not in REDIRECT_STATUSES or config.max_redirects == 0:
                raise
            uri = follow_redirect(uri, response, visited, config.max_redirects)
            logger.info("HTTP %d: redirected to %s", response.status, redact(uri))


def _checked(uri: str, ssl: ssl_module.SSLContext | None, config: ClientConfig) -> WebSocketURI:
    """The parsed URI, once the arguments that are not options are checked; the proxy is
    chosen now, so that a bad proxy URL in the environment fails before any I/O."""
    wsuri = parse_uri(uri)
    if not wsuri.secure and ssl is not None:
        raise ValueError("an ssl context needs a wss:// URI")
    if config.http2:
        raise TypeError("http2=True needs the asyncio client: the blocking client speaks HTTP/1.1")
    select_proxy(config.proxy, wsuri.host, wsuri.port, wsuri.secure)
    return wsuri


def connect(
    uri: str,
    *,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    **options: Unpack[ClientOptions],
) -> ClientConnection:
    """Open a WebSocket connection to ``uri`` and return it once the handshake is done.

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
        max_message_size, max_frame_size, max_queue, ping_interval, ping_timeout,
        close_timeout, write_limit, compression: as for :func:`~shakehands.sync.serve`;
            every option but ``ssl`` and ``server_hostname`` is defined, with its default
            and validation, in :class:`~shakehands.protocol.config.ClientConfig`.

    Returns:
        The connection; its ``uri`` is the URI it was opened to (the last one after redirects).

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

        from shakehands.sync import connect

        with connect("ws://127.0.0.1:12345/") as ws:
            print(ws.recv())
    """
    config = client_config(**options)
    _checked(uri, ssl, config)
    return _open(uri, ssl, server_hostname, None, config)


def unix_connect(
    path: str,
    uri: str = "ws://localhost/",
    *,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    **options: Unpack[UnixClientOptions],
) -> ClientConnection:
    """:func:`connect` over the Unix domain socket at ``path``.

    Args:
        path: the socket's path in the file system.
        uri: the URI of the request (its host goes into ``Host``, its path and query into the
            request line; ``wss://`` runs TLS over the socket); by default ``ws://localhost/``.
            Redirects are requested over the same socket.
        ssl, server_hostname, **options: as for :func:`connect`, but ``proxy`` (a Unix domain
            socket is reached directly).

    Raises:
        ConnectionRefused: nothing listens on the socket; ``FileNotFoundError``: no such
        socket; ``TypeError``: a ``proxy`` option; otherwise as :func:`connect`.

    Example::

        from shakehands.sync import unix_connect

        with unix_connect("/run/app.sock") as ws:
            ws.send("hello")
    """
    config = unix_client_config(**options)
    _checked(uri, ssl, config)
    return _open(uri, ssl, server_hostname, str(path), config)


def reconnect(
    uri: str,
    *,
    unix_path: str | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    **options: Unpack[ClientOptions],
) -> Iterator[ClientConnection]:
    """Connect to ``uri``, yield the connection, and connect again each time it is lost.

    The blocking twin of ``async for ws in shakehands.connect(uri)``. A function of its own,
    not ``for ws in connect(uri)``: :func:`connect` returns the connection itself, whose
    iteration already means its messages.

    Retries, after a random wait (exponential backoff with full jitter: the n-th wait is
    drawn from ``[0, min(backoff_max_delay, backoff_initial_delay * backoff_factor ** n)]``),
    when the connection is refused, reset or times out and on 5xx answers; connects again
    (after a fresh backoff's first wait) after the server closed with 1001, 1006, 1011, 1012
    or 1013. Raises at once on 4xx answers, invalid URIs, TLS certificate failures and redirect
    errors. Any other close code from the server ends the iteration; so does a ``break`` (the
    connection is closed). Starting the next iteration while the connection is open closes it
    and connects again. Each attempt is logged to the ``shakehands.client`` logger.

    Args:
        uri: as for :func:`connect`.
        unix_path: a Unix domain socket to connect to instead (as :func:`unix_connect`).
        backoff_initial_delay, backoff_factor, backoff_max_delay: the backoff (seconds).
        ssl, server_hostname, max_redirects, proxy, **options: as for :func:`connect` (no
            proxy with ``unix_path``: it is not used there).

    Raises:
        As :func:`connect`, for the failures that are not retried; ``ValueError`` for bad
        backoff values.

    Example::

        from shakehands import ConnectionClosed
        from shakehands.sync import reconnect

        for ws in reconnect("ws://127.0.0.1:12345/"):
            try:
                for message in ws:
                    print(message)
            except ConnectionClosed:
                continue
    """
    config = client_config(**options)
    path = None if unix_path is None else str(unix_path)
    if path is not None:
        config = config.replace(proxy=None)
    _checked(uri, ssl, config)
    return _reconnect(uri, path, Backoff.from_config(config), ssl, server_hostname, config)


def _reconnect(
    uri: str,
    unix_path: str | None,
    backoff: Backoff,
    ssl: ssl_module.SSLContext | None,
    server_hostname: str | None,
    config: ClientConfig,
) -> Iterator[ClientConnection]:
    where = redact(uri) if unix_path is None else f"{unix_path} (unix)"
    retry = Reconnection(where, backoff)
    while True:
        retry.connecting()
        try:
            connection = _open(uri, ssl, server_hostname, unix_path, config)
        except Exception as exc:
            delay = retry.failed(exc)
            if delay is None:
                raise
            time.sleep(delay)
            continue
        retry.connected()
        try:
            yield connection
        except BaseException:  # GeneratorExit: the caller broke out of the loop
            connection.close()
            raise
        # The caller asks for the next connection.
        was_open = connection.state is State.OPEN
        connection.close()
        delay = retry.lost(was_open, connection.close_code)
        if delay is None:
            return
        if delay:
            time.sleep(delay)
