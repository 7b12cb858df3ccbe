"""Opening a client connection through a proxy, with blocking sockets.

:func:`open_tunnel` returns a socket connected to the server through the proxy: HTTP CONNECT
over TCP or TLS (its bytes come from the sans-I/O
:class:`~shakehands.protocol.proxy.ProxyHandshake`), or SOCKS through ``python-socks``. The
client then starts TLS to the server on it for ``wss://``. Choosing the proxy is
:func:`~shakehands.protocol.proxy.select_proxy`'s.
"""

from __future__ import annotations

import contextlib
import socket
import ssl as ssl_module
import threading
from collections.abc import Callable

from .._socks import socks_errors, socks_proxy
from ..protocol.proxy import Proxy, ProxyError, ProxyHandshake

__all__ = ["open_tunnel"]

_READ_SIZE = 65536

SOCKS_MISSING = (
    "SOCKS proxies need python-socks: pip install 'shakehands[socks]' (or pip install python-socks)"
)


def _open_socks_tunnel(
    proxy: Proxy, host: str, port: int, remaining: Callable[[], float | None]
) -> socket.socket:
    try:
        from python_socks.sync import Proxy as SocksProxy
    except ImportError as exc:
        raise ImportError(SOCKS_MISSING) from exc
    socks = socks_proxy(SocksProxy, proxy)
    timeout = remaining()
    with socks_errors(proxy):
        sock: socket.socket = socks.connect(host, port, timeout=1e9 if timeout is None else timeout)
    return sock


class _TLSOverSocket:
    """TLS to an https proxy over a blocking socket, through an ``ssl.SSLObject`` and memory
    BIOs: unlike an ``ssl.SSLSocket``, usable by two threads at once (one per direction).

    ``lock`` guards the TLS state and is never held during socket I/O, so that a reader is
    never stuck behind a writer blocked on a full send buffer (the peer may be waiting for us
    to read before it reads more). ``send_lock`` keeps the TLS records in the order they were
    made: it is taken before ``lock`` by whoever takes bytes from ``outgoing``.
    """

    def __init__(
        self, sock: socket.socket, context: ssl_module.SSLContext, server_hostname: str
    ) -> None:
        self.sock = sock
        self.incoming = ssl_module.MemoryBIO()
        self.outgoing = ssl_module.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()
        #: The caller's deadline while the tunnel opens; ``None`` (blocking) once it relays.
        self.remaining: Callable[[], float | None] | None = None

    def _send(self, data: bytes) -> None:
        if self.remaining is not None:
            self.sock.settimeout(self.remaining())
        self.sock.sendall(data)

    def _flush(self) -> None:
        with self.send_lock:
            with self.lock:
                data = self.outgoing.read()
            if data:
                self._send(data)

    def _fill(self) -> None:
        if self.remaining is not None:
            self.sock.settimeout(self.remaining())
        data = self.sock.recv(_READ_SIZE)
        with self.lock:
            if data:
                self.incoming.write(data)
            else:
                self.incoming.write_eof()

    def handshake(self) -> None:
        while True:
            with self.lock:
                try:
                    self.tls.do_handshake()
                    done = True
                except ssl_module.SSLWantReadError:
                    done = False
            self._flush()
            if done:
                return
            self._fill()

    def sendall(self, data: bytes) -> None:
        with self.send_lock:
            with self.lock:
                self.tls.write(data)
                records = self.outgoing.read()
            self._send(records)

    def recv(self) -> bytes:
        """Plain bytes from the proxy (blocking); ``b""`` at the end."""
        while True:
            with self.lock:
                try:
                    return self.tls.read(_READ_SIZE)
                except ssl_module.SSLWantReadError:
                    pass
                except (ssl_module.SSLZeroReturnError, ssl_module.SSLEOFError):
                    return b""
                answer = self.outgoing.pending  # post-handshake messages (key updates)
            if answer:
                self._flush()
            self._fill()


def _relay(tunnel: _TLSOverSocket, inner: socket.socket, rest: bytes) -> None:
    """Two threads moving bytes between ``inner`` (our end of the loopback connection) and
    the tunnel."""

    def stop() -> None:
        for sock in (inner, tunnel.sock):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def upstream() -> None:
        try:
            while data := inner.recv(_READ_SIZE):
                tunnel.sendall(data)
        except (OSError, ssl_module.SSLError):
            pass
        finally:
            stop()

    def downstream() -> None:
        try:
            if rest:
                inner.sendall(rest)
            while data := tunnel.recv():
                inner.sendall(data)
        except (OSError, ssl_module.SSLError):
            pass
        finally:
            stop()
            up.join()
            inner.close()
            tunnel.sock.close()

    up = threading.Thread(target=upstream, name="shakehands-proxy-up", daemon=True)
    down = threading.Thread(target=downstream, name="shakehands-proxy-down", daemon=True)
    up.start()
    down.start()


def _loopback_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected TCP sockets on the loopback interface.

    Not ``socket.socketpair()``: its small AF_UNIX buffers make a non-blocking ``send`` of the
    client's ``SSLSocket`` would-block far more often than on TCP, which exposes the blocking
    API's use of one ``SSLSocket`` by its reader and writer threads at once (a send that
    fails with ``SSLEOFError`` while the reader is in ``recv``); loopback TCP behaves as a
    direct connection does.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        outer = socket.create_connection(listener.getsockname(), timeout=10)
        try:
            while True:
                inner, address = listener.accept()
                if address == outer.getsockname():
                    break
                inner.close()  # someone else's connection to our short-lived port
        except BaseException:
            outer.close()
            raise
    outer.settimeout(None)
    inner.settimeout(None)
    return outer, inner


def open_tunnel(
    proxy: Proxy,
    host: str,
    port: int,
    remaining: Callable[[], float | None] = lambda: None,
    *,
    tls_inside: bool = False,
) -> socket.socket:
    """A blocking socket connected to ``host:port`` through ``proxy``.

    For an ``https://`` proxy (TLS to the proxy, checked against the default trust store,
    which ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` can point elsewhere) the socket is an
    ``ssl.SSLSocket``; with ``tls_inside`` (``wss://`` through an ``https://`` proxy: TLS in
    TLS, which ``ssl.SSLSocket`` cannot nest) it is one end of a loopback TCP connection,
    whose bytes two threads relay through the TLS connection to the proxy until either side closes.

    Args:
        proxy: the proxy.
        host: the server's host name or IP address.
        port: the server's port.
        remaining: called before each blocking step, returns the seconds left (``None``: no
            limit) or raises ``TimeoutError``: how the caller's ``open_timeout`` covers the
            proxy phase.
        tls_inside: the caller starts TLS to the server on the returned socket.

    Raises:
        InvalidProxyStatus: an HTTP proxy refused (407, 403, 502, ...): it carries the status.
        ProxyError: another proxy failure (a malformed answer, a SOCKS refusal).
        ImportError: a SOCKS proxy without ``python-socks``.
        OSError, TimeoutError: the proxy could not be reached in time.
    """
    if proxy.is_socks:
        return _open_socks_tunnel(proxy, host, port, remaining)
    handshake = ProxyHandshake(proxy, host, port)
    sock = socket.create_connection((proxy.host, proxy.port), remaining())
    if proxy.scheme == "https" and tls_inside:
        return _open_nested_tunnel(sock, proxy, handshake, remaining)
    try:
        if proxy.scheme == "https":
            sock.settimeout(remaining())
            context = ssl_module.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=proxy.host)
        sock.settimeout(remaining())
        sock.sendall(handshake.request)
        while True:
            sock.settimeout(remaining())
            data = sock.recv(_READ_SIZE)
            if not data:
                handshake.receive_eof()
            if handshake.receive_data(data):
                break
        if handshake.rest:  # pragma: no cover - the server speaks after the client
            raise ProxyError("proxy sent data before the client spoke")
    except BaseException:
        sock.close()
        raise
    return sock


def _open_nested_tunnel(
    sock: socket.socket,
    proxy: Proxy,
    handshake: ProxyHandshake,
    remaining: Callable[[], float | None],
) -> socket.socket:
    tunnel = _TLSOverSocket(sock, ssl_module.create_default_context(), proxy.host)
    tunnel.remaining = remaining
    try:
        tunnel.handshake()
        tunnel.sendall(handshake.request)
        while not handshake.receive_data(data := tunnel.recv()):
            if not data:
                handshake.receive_eof()
    except BaseException:
        sock.close()
        raise
    tunnel.remaining = None
    sock.settimeout(None)
    outer, inner = _loopback_pair()
    _relay(tunnel, inner, handshake.rest)
    return outer
