"""The asyncio client: ``async with connect("ws://127.0.0.1:12345/") as ws``.

:class:`ClientConnection` sends the upgrade request built by the sans-I/O
:class:`~shakehands.protocol.client.ClientProtocol`, waits (at most ``open_timeout``) for the
server's answer, and then offers the same coroutine API as server connections.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Generator
from types import TracebackType
from typing import Any, Unpack

from ..protocol.client import NOT_TLS_REASONS, ClientProtocol, parse_uri, wrong_scheme
from ..protocol.config import ClientConfig, ClientOptions, client_config
from ..protocol.errors import InvalidHandshake, InvalidResponse
from ..protocol.handshake import Response
from .connection import WebSocketConnection

__all__ = ["connect", "ClientConnection"]


class ClientConnection(WebSocketConnection):
    """A client connection of the coroutine API (what :func:`connect` gives)."""

    protocol: ClientProtocol

    __slots__ = ("handshake_done",)

    def __init__(self, protocol: ClientProtocol, config: ClientConfig) -> None:
        super().__init__(protocol, config)
        self.request = protocol.request
        self.handshake_done: asyncio.Future[None] = self.loop.create_future()

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
            exc = self.protocol.handshake_exc or InvalidResponse(
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


class connect:  # noqa: N801 - used like a function, as in `async with connect(uri)`
    """Open a client connection; await it, or use it as an async context manager.

    Args:
        uri: ``ws://host[:port]/path`` or ``wss://...``.
        origin: an ``Origin`` header to send.
        subprotocols: subprotocols to offer, in order of preference.
        extra_headers: more request headers.
        open_timeout: seconds for TCP, TLS and the handshake together.
        ssl: an ``ssl.SSLContext`` for ``wss://`` (default: the system's trust store).
        max_message_size, max_frame_size, max_queue, write_limit, ping_interval, ping_timeout,
        close_timeout, compression: as for :func:`~shakehands.serve`.

    Every option is defined, with its default, in
    :class:`~shakehands.protocol.config.ClientConfig` (and the README's options table).

    Raises:
        InvalidURI: the URI is not ws:// or wss://.
        InvalidHandshake: the server refused the upgrade (:class:`~shakehands.InvalidStatus`
            carries its response) or answered wrongly; :class:`~shakehands.InvalidResponse`
            also for a ws:// URI of a TLS server or a wss:// URI of a plain one (the message
            names the scheme to use).
        OSError, TimeoutError: the connection could not be made in time.

    Example::

        async with connect("ws://127.0.0.1:12345/") as ws:
            print(await ws.recv())
    """

    def __init__(
        self,
        uri: str,
        *,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self.uri = uri
        self.wsuri = parse_uri(uri)
        #: The options (validated when ``connect`` is called, before any I/O).
        self.config = client_config(**options)
        self.open_timeout = self.config.open_timeout
        if self.wsuri.secure and ssl is None:
            ssl = ssl_module.create_default_context()
        elif not self.wsuri.secure and ssl is not None:
            raise ValueError("an ssl context needs a wss:// URI")
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.connection: ClientConnection | None = None

    async def _open(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        wsuri = self.wsuri

        def factory() -> ClientConnection:
            return ClientConnection(ClientProtocol(self.uri, self.config), self.config)

        kwargs: dict[str, Any] = {}
        if self.ssl is not None:
            kwargs["ssl"] = self.ssl
            kwargs["server_hostname"] = self.server_hostname or wsuri.host

        async def handshake() -> ClientConnection:
            try:
                _, connection = await loop.create_connection(
                    factory, wsuri.host, wsuri.port, **kwargs
                )
            except ssl_module.SSLError as exc:
                if exc.reason in NOT_TLS_REASONS:
                    raise wrong_scheme(wsuri, server_speaks_tls=False) from exc
                raise
            try:
                await connection.handshake_done
            except BaseException as exc:
                connection.transport.abort()
                if (
                    isinstance(exc, (InvalidHandshake, OSError))
                    and not wsuri.secure
                    and connection.protocol.nothing_received
                    and await _speaks_tls(wsuri.host, wsuri.port)
                ):
                    raise wrong_scheme(wsuri, server_speaks_tls=True) from exc
                raise
            return connection

        try:
            connection = await asyncio.wait_for(handshake(), self.open_timeout)
        except TimeoutError:
            raise TimeoutError(f"opening handshake with {self.uri} timed out") from None
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
