"""WebSockets over HTTP/2 (RFC 8441) for the asyncio client: ``connect(uri, http2=True)`` and
:func:`connect_session`, many WebSockets over one TLS connection.

:class:`HTTP2ClientConnection` owns the TLS connection and an ``h2.connection.H2Connection``
(client side); it shares its streams and flow control with the server
(:class:`~shakehands.http2.base.H2Endpoint`, :class:`~shakehands.http2.base.H2Stream`). Each
WebSocket is one stream on which the ordinary
:class:`~shakehands.asyncio.client.ClientConnection` runs, driving the same sans-I/O
:class:`~shakehands.protocol.client.ClientProtocol` as over HTTP/1.1: the core builds the
extended CONNECT (:meth:`~.ClientProtocol.use_http2`,
:meth:`~.ClientProtocol.http2_request_fields`: ``:protocol websocket``, version 13, origin,
subprotocols, permessage-deflate) and checks the answer
(:meth:`~.ClientProtocol.receive_http2_response`: ``200``, no accept key; another status raises
:class:`~shakehands.InvalidStatus` as over HTTP/1.1).

The choice of HTTP/2 is made before anything is sent over it where it can be: ALPN offers
``h2`` and ``http/1.1`` and, when the server picks ``http/1.1``, the ordinary handshake runs on
that connection. When it picks ``h2``, RFC 8441 §3 requires waiting for the server's SETTINGS:
without ``SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`` the HTTP/2 connection is closed (GOAWAY) and
the client connects again offering ``http/1.1`` only (and remembers, for that ``connect``'s
later attempts).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Unpack
from urllib.parse import urlsplit, urlunsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from ..protocol.client import parse_uri
from ..protocol.config import ClientConfig, ClientOptions, client_config
from ..protocol.errors import HandshakeInterrupted, InvalidHandshake, InvalidResponse
from ..protocol.handshake import Headers, Response
from .base import STREAM_WINDOW, H2Endpoint, H2Stream

if TYPE_CHECKING:
    from ..asyncio.client import ClientConnection, _Attempt, connect

__all__ = ["GoawayFilter", "HTTP2ClientConnection", "HTTP2Session", "connect_session"]

#: ALPN offers of an HTTP/2 attempt, and of the HTTP/1.1 attempt after a fallback.
ALPN_H2 = ["h2", "http/1.1"]
ALPN_HTTP11 = ["http/1.1"]

#: The largest answer head accepted (HPACK's accounting: names, values, 32 per field).
MAX_HEADER_LIST = 2**16

#: The bytes of a refusal's body kept for its error message (the rest is read and dropped).
REFUSAL_BODY = 4096

#: The connection window the client grants (as browsers do: Chromium's is 15 MiB), far above
#: one stream's, so that a stream whose reader is slow cannot hold it all.
CONNECTION_WINDOW = 2**24


class GoawayFilter:
    """Takes the GOAWAY frames out of a stream of HTTP/2 frames (what a server sends).

    ``h2`` closes its state machine on any GOAWAY and takes no frame after it, while a graceful
    one (a server shutting down) is followed by the open streams' last frames: their closing
    handshakes (1001). Frames are only delimited here (9-byte headers), not parsed: ``h2``
    still checks everything else, and bytes are copied only around a GOAWAY or a frame header
    split across reads.
    """

    __slots__ = ("_partial", "_skip")

    def __init__(self) -> None:
        self._partial = b""  # the start of a frame header, or of a GOAWAY frame
        self._skip = 0  # bytes of the current frame still to come, passed through

    def feed(self, data: bytes) -> tuple[bytes, list[tuple[int, int]]]:
        """``data`` without its GOAWAY frames, and those as ``(last_stream_id, error_code)``.

        Bytes that do not complete a frame header (or a GOAWAY frame) are kept for the next
        call; everything else is returned at once, whole frames or not.
        """
        buf = self._partial + data if self._partial else data
        self._partial = b""
        size = len(buf)
        pos = min(self._skip, size)
        self._skip -= pos
        kept: list[bytes] = []
        goaways: list[tuple[int, int]] = []
        start = 0
        while pos + 9 <= size:
            length = int.from_bytes(buf[pos : pos + 3], "big")
            if buf[pos + 3] == 0x7 and length <= 2**16:
                if pos + 9 + length > size:
                    break  # the rest of this GOAWAY comes with the next read
                kept.append(buf[start:pos])
                payload = buf[pos + 9 : pos + 9 + length]
                start = pos = pos + 9 + length
                if len(payload) >= 8:
                    last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                    goaways.append((last, int.from_bytes(payload[4:8], "big")))
                continue
            pos += 9 + length
        if pos > size:
            self._skip = pos - size
            end = size
        else:
            end = pos
            self._partial = bytes(buf[pos:])
        if not kept:
            return (buf if start == 0 and end == size else buf[start:end]), goaways
        kept.append(buf[start:end])
        return b"".join(kept), goaways


class HTTP2ClientConnection(H2Endpoint):
    """The client side of one HTTP/2 connection (after ALPN chose ``h2``).

    Args:
        config: the client's options (``close_timeout``...).
        close_when_idle: close the connection when its last stream is done (what
            ``connect(http2=True)`` does: one connection per WebSocket); else it stays open for
            more (:class:`HTTP2Session`).
    """

    def __init__(self, config: ClientConfig, *, close_when_idle: bool) -> None:
        super().__init__()
        self.config = config
        self.close_when_idle = close_when_idle
        #: Done when the server's first SETTINGS frame has arrived.
        self.settings_received: asyncio.Future[None] = self.loop.create_future()
        #: Done when the TLS connection is lost.
        self.closed: asyncio.Future[None] = self.loop.create_future()
        # Refusals waiting for the end of their body: stream id -> (status, headers, body).
        self._refusals: dict[int, tuple[str, list[tuple[str, str]], bytearray]] = {}
        #: The server's GOAWAY, as ``(last_stream_id, error_code)``, once received.
        self.goaway_received: tuple[int, int] | None = None
        self._goaways = GoawayFilter()

    @property
    def close_limit(self) -> float:
        """The client's ``close_limit`` (see :class:`~.base.H2Endpoint`)."""
        return float(self.config.close_limit)

    @property
    def extended_connect(self) -> bool:
        """Whether the server advertised ``SETTINGS_ENABLE_CONNECT_PROTOCOL = 1``."""
        return bool(self.h2.remote_settings.enable_connect_protocol)

    @property
    def is_open(self) -> bool:
        """Whether new streams can be opened (neither side has ended the connection)."""
        return not self._ended and not self._goaway_sent and self.goaway_received is None

    # ------------------------------------------------------------------------------------
    # asyncio.Protocol
    # ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        header_list = MAX_HEADER_LIST
        codes = h2.settings.SettingCodes
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={codes.ENABLE_PUSH: 0, codes.MAX_HEADER_LIST_SIZE: header_list},
        )
        self.h2.decoder.max_header_list_size = header_list
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - STREAM_WINDOW)
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self._ended:
            return
        data, goaways = self._goaways.feed(data)
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._end(ErrorCodes.PROTOCOL_ERROR, goaway=False)  # h2 queued its GOAWAY
            return
        for event in events:
            if self._ended:
                return
            stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
            if isinstance(event, h2.events.ResponseReceived):
                if stream is not None:
                    self._response(stream, event.headers or [], event.stream_ended is not None)
            elif isinstance(event, h2.events.DataReceived):
                size = event.flow_controlled_length or 0
                refusal = self._refusals.get(event.stream_id or 0)
                if refusal is not None:
                    body = refusal[2]
                    body += (event.data or b"")[: REFUSAL_BODY - len(body)]
                    self._ack(size, event.stream_id or 0)
                elif stream is None:
                    self._ack(size, event.stream_id or 0)
                else:
                    stream._receive(event.data or b"", size)
            elif isinstance(event, h2.events.StreamEnded):
                if stream is not None:
                    self._refused(stream)
                    stream._remote_end()
            elif isinstance(event, h2.events.StreamReset):
                if stream is not None:
                    self._refused(stream)
                    stream._reset_by_peer()
            elif isinstance(event, h2.events.WindowUpdated):
                self._window_opened(event.stream_id or 0)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                if not self.settings_received.done():
                    self.settings_received.set_result(None)
                self._window_opened(0)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._peer_goaway()
        for last_stream_id, error_code in goaways:
            if not self._ended:
                self._goaway(last_stream_id, error_code)
        self._flush()

    def eof_received(self) -> bool | None:
        return None

    def _goaway(self, last_stream_id: int, error_code: int) -> None:
        """The server's GOAWAY: no new streams; those above ``last_stream_id`` were not
        processed (reset: their WebSockets fail to open); an error ends the connection."""
        self.goaway_received = (last_stream_id, error_code)
        if error_code != ErrorCodes.NO_ERROR:
            self._end(ErrorCodes.NO_ERROR, goaway=False)
            return
        for stream_id, stream in list(self.streams.items()):
            if stream_id > last_stream_id:
                stream._reset_by_peer()
        self._stream_done()

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._drop_streams(exc)
        if not self.settings_received.done():
            self.settings_received.set_exception(
                HandshakeInterrupted("the HTTP/2 connection closed before the server's SETTINGS")
            )
            self.settings_received.exception()
        if not self.closed.done():
            self.closed.set_result(None)

    # ------------------------------------------------------------------------------------
    # Streams
    # ------------------------------------------------------------------------------------

    def open_websocket(self, connection: ClientConnection) -> ClientConnection:
        """Run ``connection`` (made, not yet connected) on a new extended CONNECT stream.

        Its core's handshake becomes HTTP/2 (:meth:`~.ClientProtocol.use_http2`), its request
        leaves as this stream's HEADERS, and ``connection.handshake_done`` says how it went.

        Raises:
            InvalidHandshake: the connection is closed or going away, or the server did not
                advertise extended CONNECT.
        """
        if not self.is_open:
            raise HandshakeInterrupted("the HTTP/2 connection is closed")
        if not self.extended_connect:
            raise InvalidHandshake("the server does not accept WebSockets over HTTP/2")
        core = connection.protocol
        core.use_http2()
        stream_id = self.h2.get_next_available_stream_id()
        try:
            self.h2.send_headers(stream_id, core.http2_request_fields(), end_stream=False)
        except h2.exceptions.ProtocolError as exc:  # too many streams open, say
            raise InvalidHandshake(f"cannot open an HTTP/2 stream: {exc}") from None
        stream = H2Stream(self, stream_id, connection)
        stream._head_sent = True  # the request is the head, sent just now
        stream.client = True
        self.streams[stream_id] = stream
        connection.connection_made(stream)
        self._flush()
        return connection

    def _response(self, stream: H2Stream, raw: list[Any], ended: bool) -> None:
        """The answer's HEADERS on ``stream``: to its core, which accepts or refuses; a
        refusal with a body waits for it (the first :data:`REFUSAL_BODY` bytes), so that its
        error quotes it as over HTTP/1.1."""
        connection: Any = stream._protocol
        if connection is None:
            return
        status = ""
        fields: list[tuple[str, str]] = []
        for name, value in raw:
            name = name.decode("latin-1") if isinstance(name, bytes) else name
            value = value.decode("latin-1") if isinstance(value, bytes) else value
            if name == ":status":
                status = value
            elif not name.startswith(":"):
                fields.append((name, value))
        if status != "200" and not ended:
            self._refusals[stream.stream_id] = (status, fields, bytearray())
            return
        self._answer(stream, status, fields, b"")

    def _refused(self, stream: H2Stream) -> None:
        """The end of a refusal's body (or a reset before it): the answer, at last."""
        refusal = self._refusals.pop(stream.stream_id, None)
        if refusal is not None:
            self._answer(stream, *refusal)

    def _answer(
        self, stream: H2Stream, status: str, fields: list[tuple[str, str]], body: bytes | bytearray
    ) -> None:
        connection: Any = stream._protocol
        if connection is None:
            return
        core = connection.protocol
        try:
            response = Response(int(status), Headers(fields), bytes(body))
        except (TypeError, ValueError):
            core._handshake_failed(InvalidResponse(f"invalid HTTP/2 response status {status!r}"))
        else:
            core.receive_http2_response(response)
        stream._opened = core.handshake_exc is None
        connection._process()

    def _stream_done(self) -> None:
        if (self.close_when_idle or self.goaway_received is not None) and not self.streams:
            self.close()

    def _maybe_done(self) -> None:
        """Close once every stream's WebSocket is over, when the connection is kept only for
        them (``close_when_idle``, or after the server's GOAWAY)."""
        if (self.close_when_idle or self.goaway_received is not None) and all(
            stream._local_ended and stream._lost for stream in self.streams.values()
        ):
            self.close()

    def close(self) -> None:
        """End the connection: GOAWAY ``NO_ERROR``, its streams lost, then the socket."""
        self._end(ErrorCodes.NO_ERROR)


class _ALPNChoice(asyncio.Protocol):
    """The first protocol of the TLS connection: hands it over to what ALPN chose."""

    def __init__(self, http11: Callable[[], ClientConnection], http2: HTTP2ClientConnection):
        self._http11 = http11
        self._http2 = http2
        #: After ``connection_made``: the HTTP/1.1 connection, or ``None`` (``h2`` chosen).
        self.http11: ClientConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        protocol: asyncio.Protocol
        if chosen == "h2":
            protocol = self._http2
        else:
            protocol = self.http11 = self._http11()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


async def open_connection(
    opener: connect,
    factory: Callable[[], ClientConnection],
    uri: str,
    attempt: _Attempt,
) -> ClientConnection:
    """What ``connect(uri, http2=True)`` does for one ``wss://`` attempt (see the module's
    docstring): the WebSocket over HTTP/2 when the server allows it, else over HTTP/1.1.

    The HTTP/2 connection carries this WebSocket only, and closes with it.
    """
    wsuri = parse_uri(uri)
    endpoint = HTTP2ClientConnection(opener.config, close_when_idle=True)
    choice = await opener._open_transport(
        lambda: _ALPNChoice(factory, endpoint), wsuri, attempt, alpn=ALPN_H2
    )
    if choice.http11 is not None:
        return choice.http11
    attempt.phase = "HTTP/2 SETTINGS"
    try:
        await endpoint.settings_received
    except BaseException:
        endpoint.transport.abort()
        raise
    if not endpoint.extended_connect:
        endpoint.close()
        opener._http11_only.add((wsuri.host, wsuri.port))
        return await opener._open_transport(factory, wsuri, attempt, alpn=ALPN_HTTP11)
    attempt.phase = "WebSocket handshake"
    try:
        return endpoint.open_websocket(factory())
    except BaseException:
        endpoint.close()  # kept for this WebSocket alone
        raise


class HTTP2Session:
    """One HTTP/2 connection to a server, on which :meth:`connect` opens WebSockets.

    Made by :func:`connect_session`; use it as an async context manager (leaving it closes
    the connection and every WebSocket on it).

    Args:
        uri: the ``wss://`` URI of the server (its path is the default of :meth:`connect`).
        ssl: the TLS context (default: the system's trust store); its ALPN protocols are set
            to ``h2`` (and ``http/1.1``).
        server_hostname: the name to check the certificate against (default: the URI's host).
        **options: the client's options, for every WebSocket of the session (as for
            :func:`~shakehands.connect`; ``proxy`` and ``http2`` are ignored: a session is
            a direct HTTP/2 connection).
    """

    def __init__(
        self,
        uri: str,
        *,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        from ..asyncio.client import connect

        options["proxy"] = None
        options["http2"] = True
        #: The ``connect`` whose options, TLS context and transport this session uses.
        self.opener = connect(uri, ssl=ssl, server_hostname=server_hostname, **options)
        if not self.opener.wsuri.secure:
            raise ValueError("an HTTP/2 session needs a wss:// URI")
        self.uri = uri
        self.config: ClientConfig = self.opener.config
        self.endpoint: HTTP2ClientConnection | None = None

    async def open(self) -> HTTP2Session:
        """Open the HTTP/2 connection and wait for the server's SETTINGS.

        Raises:
            InvalidHandshake: the server did not choose ``h2`` or does not advertise
                extended CONNECT (no fallback here: a session is HTTP/2).
            OpenTimeout, OSError, TLSVerificationError: as :func:`~shakehands.connect`.
        """
        from ..asyncio.client import _Attempt

        wsuri = self.opener.wsuri
        attempt = _Attempt()
        endpoint = HTTP2ClientConnection(self.config, close_when_idle=False)

        async def opening() -> None:
            choice = await self.opener._open_transport(
                lambda: _ALPNChoice(_no_http11, endpoint), wsuri, attempt, alpn=["h2"]
            )
            if choice.http11 is not None:  # pragma: no cover - ALPN offered h2 only
                choice.http11.transport.abort()
                raise InvalidHandshake("the server did not choose h2")
            attempt.phase = "HTTP/2 SETTINGS"
            await endpoint.settings_received

        try:
            await self.opener._within_open_timeout(opening(), self.uri, attempt)
        except BaseException:
            with contextlib.suppress(AttributeError):
                endpoint.transport.abort()
            raise
        if not endpoint.extended_connect:
            endpoint.close()
            raise InvalidHandshake(
                f"{wsuri.host}:{wsuri.port} does not accept WebSockets over HTTP/2 "
                "(no SETTINGS_ENABLE_CONNECT_PROTOCOL)"
            )
        self.endpoint = endpoint
        return self

    async def connect(self, path: str | None = None) -> ClientConnection:
        """Open a WebSocket to ``path`` (default: the session URI's) on a new stream.

        Raises:
            InvalidStatus: the server refused the stream (404, 403...), as
                :func:`~shakehands.connect`.
            InvalidHandshake: the session is closed, or another wrong answer.
            OpenTimeout: no answer within ``open_timeout``.
        """
        from ..asyncio.client import ClientConnection, _Attempt
        from ..protocol.client import ClientProtocol

        endpoint = self.endpoint
        if endpoint is None or not endpoint.is_open:
            raise InvalidHandshake("the HTTP/2 session is not open")
        uri = self.uri
        if path is not None:
            target, _, query = (path if path.startswith("/") else "/" + path).partition("?")
            uri = urlunsplit(urlsplit(self.uri)._replace(path=target, query=query))
        connection = ClientConnection(ClientProtocol(uri, self.config), self.config)
        connection.uri = uri
        attempt = _Attempt()
        attempt.phase = "WebSocket handshake"

        async def handshake() -> ClientConnection:
            endpoint.open_websocket(connection)
            try:
                await connection.handshake_done
            except BaseException:
                connection.transport.abort()
                raise
            return connection

        return await self.opener._within_open_timeout(handshake(), uri, attempt)

    async def close(self) -> None:
        """Close every WebSocket of the session (1000), then the connection (GOAWAY)."""
        endpoint = self.endpoint
        if endpoint is None:
            return
        connections = [s._protocol for s in list(endpoint.streams.values())]
        await asyncio.gather(
            *(c.close() for c in connections if c is not None and hasattr(c, "close")),
            return_exceptions=True,
        )
        endpoint.close()
        await endpoint.closed

    async def __aenter__(self) -> HTTP2Session:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _no_http11() -> ClientConnection:  # pragma: no cover - ALPN offered h2 only
    raise InvalidHandshake("the server did not choose h2")


def connect_session(
    uri: str,
    *,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    **options: Unpack[ClientOptions],
) -> HTTP2Session:
    """An :class:`HTTP2Session`: many WebSockets over one HTTP/2 connection.

    Args:
        uri, ssl, server_hostname, options: see :class:`HTTP2Session`.

    Returns:
        The session, to open with ``async with`` (or ``await session.open()``).

    Raises:
        InvalidURI, TypeError, ValueError: a bad URI (or not ``wss://``) or option, before
            any I/O.

    Example::

        async with shakehands.http2.connect_session("wss://example.com/") as session:
            chat = await session.connect("/chat")
            feed = await session.connect("/feed")
    """
    client_config(**options)  # a bad option fails here, before any I/O
    return HTTP2Session(uri, ssl=ssl, server_hostname=server_hostname, **options)
