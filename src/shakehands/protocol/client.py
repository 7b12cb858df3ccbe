"""The client side of the opening handshake, on top of :class:`~.connection.Connection`.

:class:`ClientProtocol` builds the upgrade request for a ``ws://`` or ``wss://`` URI, parses the
server's response and checks it (``Sec-WebSocket-Accept``, subprotocol), then reads frames. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack
from urllib.parse import urlsplit

from .config import ClientConfig, ClientOptions, client_config
from .connection import Connection, Role, State
from .errors import (
    InvalidHandshake,
    InvalidResponse,
    InvalidStatus,
    InvalidURI,
    NegotiationError,
)
from .extensions.permessage_deflate import client_accept, client_offer
from .handshake import (
    Request,
    Response,
    ResponseParser,
    build_request,
    check_response,
    generate_key,
)

__all__ = ["ClientProtocol", "WebSocketURI", "parse_uri", "wrong_scheme", "NOT_TLS_REASONS"]

#: OpenSSL's reasons (``ssl.SSLError.reason``) for a TLS handshake answered with something that
#: is not TLS: a wss:// URI for a plain-text server (its ``400 Bad Request``, say).
NOT_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL"}
)


@dataclass(frozen=True)
class WebSocketURI:
    """A parsed ``ws://`` or ``wss://`` URI."""

    secure: bool
    host: str
    port: int
    resource: str


def parse_uri(uri: str) -> WebSocketURI:
    """Parse a WebSocket URI (RFC 6455 §3).

    Raises:
        InvalidURI: not a ws/wss URI, no host, or a fragment.

    Example:
        >>> parse_uri("ws://127.0.0.1:12345/chat?x=1")
        WebSocketURI(secure=False, host='127.0.0.1', port=12345, resource='/chat?x=1')
    """
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(f"{uri!r} is not a valid URI: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise InvalidURI(f"{uri!r} is not a ws:// or wss:// URI")
    if not parts.hostname:
        raise InvalidURI(f"{uri!r} has no host")
    if parts.fragment:
        raise InvalidURI(f"{uri!r} has a fragment, which WebSocket URIs may not have")
    secure = parts.scheme == "wss"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return WebSocketURI(secure, parts.hostname, port or (443 if secure else 80), resource)


def wrong_scheme(uri: WebSocketURI, *, server_speaks_tls: bool) -> InvalidResponse:
    """The error for a URI of the wrong scheme: ws:// for a TLS server (``server_speaks_tls``)
    or wss:// for a plain-text one. It says which scheme to use."""
    where = f"{uri.host}:{uri.port}"
    if server_speaks_tls:
        return InvalidResponse(f"{where} expects TLS: use a wss:// URI, not ws://")
    return InvalidResponse(f"{where} does not speak TLS: use a ws:// URI, not wss://")


def _looks_like_tls(data: bytes) -> bool:
    """Whether ``data`` starts like a TLS record (a handshake or an alert, TLS 1.x)."""
    return len(data) >= 2 and data[0] in (0x15, 0x16) and data[1] == 0x03


class ClientProtocol(Connection):
    """Sans-I/O client connection: request, response check, then frames.

    Call :meth:`send_request` first; feed the server's bytes; a :class:`Response` event means the
    connection is open (check :attr:`handshake_exc` for a refusal).

    Args:
        uri: ``ws://host[:port]/path`` or ``wss://...``.
        config: the client's options (:class:`~.config.ClientConfig`); or, instead, the options
            themselves as keyword arguments: ``origin``, ``subprotocols``, ``extra_headers``,
            ``max_message_size``, ``max_frame_size``, ``compression`` (see
            :class:`~.config.ClientConfig`). Used on its own with keyword arguments, the core
            offers compression only when ``compression`` is given; the front ends default to
            ``"deflate"``.
    """

    def __init__(
        self, uri: str, config: ClientConfig | None = None, **options: Unpack[ClientOptions]
    ) -> None:
        if config is None:
            options.setdefault("compression", None)
            config = client_config(**options)
        elif options:
            raise TypeError("pass a ClientConfig or options as keyword arguments, not both")
        super().__init__(
            Role.CLIENT,
            max_message_size=config.max_message_size,
            max_frame_size=config.max_frame_size,
            state=State.CONNECTING,
        )
        #: The options.
        self.config = config
        self.uri = parse_uri(uri)
        self.key = generate_key()
        self.subprotocols = list(config.subprotocols)
        self.compression = config.compression
        self.request: Request = build_request(
            uri,
            self.key,
            origin=config.origin,
            subprotocols=self.subprotocols,
            extensions=client_offer(config.compression) if config.compression else None,
            extra_headers=config.extra_headers,
        )
        self.response: Response | None = None
        self.handshake_exc: InvalidHandshake | None = None
        self.subprotocol: str | None = None
        #: Whether the server has sent nothing yet. A ws:// connection closed before any byte
        #: may have reached a TLS server: the I/O layers then check (see :func:`wrong_scheme`).
        self.nothing_received = True
        self._parser = ResponseParser()

    def send_request(self) -> None:
        """Queue the upgrade request."""
        self._out.append(self.request.serialize())

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes; while CONNECTING they are the response."""
        if self.state is not State.CONNECTING:
            super().receive_data(data)
            return
        data = bytes(data)
        first = self.nothing_received
        if data:
            self.nothing_received = False
        try:
            response = self._parser.feed(data)
        except InvalidHandshake as exc:
            tls = first and not self.uri.secure and _looks_like_tls(data)
            self._handshake_failed(wrong_scheme(self.uri, server_speaks_tls=True) if tls else exc)
            return
        if response is not None:
            self._got_response(response)

    def _got_response(self, response: Response) -> None:
        self.response = response
        try:
            if response.status != 101:
                raise InvalidStatus(f"server refused the upgrade: HTTP {response.status}", response)
            self.subprotocol = check_response(response, self.key, self.subprotocols)
            extensions = response.headers.get_all("Sec-WebSocket-Extensions")
            if self.compression is not None:
                codec = client_accept(extensions, self.compression)
                if codec is not None:
                    self.use_deflate(codec)
            elif extensions:
                raise NegotiationError(
                    f"server accepted extensions that were not offered: {', '.join(extensions)}"
                )
        except InvalidHandshake as exc:
            self._handshake_failed(exc)
            return
        self.state = State.OPEN
        self._events.append(response)
        rest = self._parser.rest
        if rest:
            self.receive_data(rest)

    def _handshake_failed(self, exc: InvalidHandshake) -> None:
        self.handshake_exc = exc
        self.state = State.CLOSED
        self._discard = True

    def receive_eof(self) -> None:
        """The server closed; during the handshake that is a refusal or a failure."""
        if self.state is State.CONNECTING:
            response = self._parser.feed_eof()
            if response is not None:
                self._got_response(response)
            if self.handshake_exc is None:
                self.handshake_exc = InvalidResponse(
                    "connection closed before any response"
                    if self.nothing_received
                    else "connection closed during the handshake"
                )
        super().receive_eof()

    def close_expected(self) -> bool:
        """Close at once after a failed handshake; otherwise as :class:`Connection` says."""
        if self.handshake_exc is not None:
            return True
        return super().close_expected()
