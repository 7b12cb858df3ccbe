"""Opening a client connection through a proxy, on asyncio.

:func:`create_proxy_connection` is :meth:`loop.create_connection` through a proxy: it opens
the tunnel (HTTP CONNECT over TCP or TLS, whose bytes come from the sans-I/O
:class:`~shakehands.protocol.proxy.ProxyHandshake`, or SOCKS through ``python-socks``), then
starts TLS to the server inside the tunnel for ``wss://``, and hands the transport to the
protocol made by ``factory``. Choosing the proxy is
:func:`~shakehands.protocol.proxy.select_proxy`'s.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl as ssl_module
from collections.abc import Callable
from typing import TypeVar

from .._socks import socks_errors, socks_proxy
from ..protocol.proxy import InvalidProxyMessage, Proxy, ProxyError, ProxyHandshake

__all__ = ["create_proxy_connection", "open_socks_tunnel"]

P = TypeVar("P", bound=asyncio.BaseProtocol)

SOCKS_MISSING = (
    "SOCKS proxies need python-socks: pip install 'shakehands[socks]' "
    "(or pip install 'python-socks[asyncio]')"
)


class _TunnelProtocol(asyncio.Protocol):
    """Speaks CONNECT on the proxy connection until the tunnel is open."""

    def __init__(self, handshake: ProxyHandshake) -> None:
        self.handshake = handshake
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self.handshake.request)

    def data_received(self, data: bytes) -> None:
        if self.open.done():
            # Bytes after the answer, before the client's protocol took over: the tunnel's.
            self.handshake.rest += data
            return
        try:
            if self.handshake.receive_data(data):
                self.open.set_result(None)
        except ProxyError as exc:
            self.open.set_exception(exc)

    def eof_received(self) -> bool | None:
        if not self.open.done():
            try:
                self.handshake.receive_eof()
            except ProxyError as exc:
                self.open.set_exception(exc)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.open.done():
            self.open.set_exception(
                exc or InvalidProxyMessage("proxy closed the connection before answering")
            )
            self.open.exception()  # retrieved: the caller may be gone already (a timeout)


async def open_socks_tunnel(proxy: Proxy, host: str, port: int) -> socket.socket:
    """A connected socket to ``host:port`` through the SOCKS ``proxy`` (``python-socks``).

    ``socks5h`` and ``socks4a`` let the proxy resolve ``host``; ``socks5`` and ``socks4``
    resolve it here.

    Raises:
        ImportError: ``python-socks`` is not installed (the message names the extra).
        ProxyError: the proxy refused (the message carries its reason).
        OSError: the proxy could not be reached.
    """
    try:
        from python_socks.async_.asyncio import Proxy as SocksProxy
    except ImportError as exc:
        raise ImportError(SOCKS_MISSING) from exc
    socks = socks_proxy(SocksProxy, proxy)
    with socks_errors(proxy):
        # No timeout of its own: the caller's open_timeout bounds the whole connection.
        sock: socket.socket = await socks.connect(host, port, timeout=1e9)
    return sock


def _fix_nested_tls_abort(transport: asyncio.BaseTransport) -> None:
    """Work around CPython gh-113214 (fixed in 3.11.8 and 3.12.2) for TLS inside TLS.

    A fatal error of the inner TLS layer (the server's certificate refused, say) calls the
    outer TLS transport's ``_force_close(exc)``, which calls ``SSLProtocol._abort(exc)``; before
    the fix ``_abort`` takes no argument, and the caller gets that ``TypeError`` instead of
    the ``ssl.SSLCertVerificationError``. On those versions only, this transport's
    ``_force_close`` is replaced by what the fix does.
    """
    ssl_protocol = getattr(transport, "_ssl_protocol", None)
    abort = getattr(ssl_protocol, "_abort", None)
    if abort is None or not hasattr(transport, "_force_close"):
        return  # another loop (uvloop) or another implementation: nothing to fix
    try:
        takes_exc = len(inspect.signature(abort).parameters) >= 1
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        return
    if takes_exc:
        return

    def force_close(exc: BaseException | None) -> None:
        transport._closed = True  # type: ignore[attr-defined]
        abort()

    transport._force_close = force_close


async def create_proxy_connection(
    factory: Callable[[], P],
    proxy: Proxy,
    host: str,
    port: int,
    *,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
) -> tuple[asyncio.Transport, P]:
    """Like ``loop.create_connection(factory, host, port, ssl=..., server_hostname=...)``,
    through ``proxy``.

    An ``https://`` proxy is reached over TLS, checked against the default trust store (which
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` can point elsewhere); TLS to the server (``ssl``)
    then runs inside that TLS connection. There is no timeout here: wrap the call in one.

    Raises:
        InvalidProxyStatus: an HTTP proxy refused (407, 403, 502, ...): it carries the status.
        ProxyError: another proxy failure (a malformed answer, a SOCKS refusal).
        ImportError: a SOCKS proxy without ``python-socks``.
        OSError, ssl.SSLError: the proxy or the server could not be reached.
    """
    loop = asyncio.get_running_loop()
    if proxy.is_socks:
        sock = await open_socks_tunnel(proxy, host, port)
        try:
            return await loop.create_connection(
                factory,
                sock=sock,
                ssl=ssl,
                server_hostname=None if ssl is None else server_hostname or host,
            )
        except BaseException:
            sock.close()
            raise

    handshake = ProxyHandshake(proxy, host, port)
    proxy_ssl = ssl_module.create_default_context() if proxy.scheme == "https" else None
    transport, tunnel = await loop.create_connection(
        lambda: _TunnelProtocol(handshake), proxy.host, proxy.port, ssl=proxy_ssl
    )
    try:
        await tunnel.open
        protocol = factory()
        if ssl is not None:
            # TLS inside the tunnel: start_tls works over a TLS transport too (an https proxy).
            if proxy_ssl is not None:
                _fix_nested_tls_abort(transport)
            tls = await loop.start_tls(
                transport, tunnel, ssl, server_hostname=server_hostname or host
            )
            if tls is None:  # pragma: no cover - only when the transport closes meanwhile
                raise InvalidProxyMessage("the tunnel closed during the TLS handshake")
            transport = tls
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if ssl is None and tunnel.handshake.rest and isinstance(protocol, asyncio.Protocol):
            protocol.data_received(tunnel.handshake.rest)
    except BaseException:
        transport.abort()
        raise
    return transport, protocol
