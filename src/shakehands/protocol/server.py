"""The server side of the opening handshake, on top of :class:`~.connection.Connection`.

:class:`ServerProtocol` starts in CONNECTING, parses the request under limits, and lets the I/O
layer look at it (the seed's ``getRequest``) before answering with :meth:`ServerProtocol.accept`
(a 101, or the 4xx that the request deserves) or any :class:`Response` of its own (the seed's
``putResponse``), sent with :meth:`ServerProtocol.send_response`. No I/O here.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Unpack

from .config import SelectSubprotocol, ServerConfig, ServerOptions, server_config
from .connection import Connection, Role, State
from .errors import InvalidHandshake, InvalidOrigin, InvalidRequest, NegotiationError
from .extensions.permessage_deflate import DeflateOptions, PerMessageDeflate, server_negotiate
from .handshake import (
    HeadersLike,
    Request,
    RequestParser,
    Response,
    build_accept_response,
    check_extended_connect,
    check_request,
    error_response,
)

__all__ = ["ServerProtocol", "SelectSubprotocol"]


#: Bytes a client may send after its request, before our answer, that we keep (and then parse).
MAX_EARLY_DATA = 2**16


class ServerProtocol(Connection):
    """Sans-I/O server connection: handshake, then frames.

    Args:
        config: the server's options (:class:`~.config.ServerConfig`), shared by all its
            connections; or, instead, the options themselves as keyword arguments (see
            :class:`~.config.ServerConfig` for each): ``origins``, ``subprotocols``,
            ``select_subprotocol``, ``max_line``, ``max_headers``, ``max_header_bytes``,
            ``max_message_size``, ``max_frame_size``, ``compression``. Used on its own with
            keyword arguments, the core negotiates compression only when ``compression`` is
            given; the front ends default to ``"deflate"``.

    Example:
        >>> p = ServerProtocol(subprotocols=["chat"])
        >>> p.receive_data(b"GET / HTTP/1.1\\r\\nHost: a\\r\\nUpgrade: websocket\\r\\n"
        ...     b"Connection: Upgrade\\r\\nSec-WebSocket-Version: 13\\r\\n"
        ...     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n\\r\\n")
        >>> p.send_response(p.accept())
        >>> p.data_to_send()[0].split(b"\\r\\n")[0]
        b'HTTP/1.1 101 Switching Protocols'
    """

    # Slots, as the base class's: one of these per connection, no instance dict (issue 14).
    __slots__ = (
        "config",
        "_negotiated_deflate",
        "_head",
        "request",
        "response",
        "handshake_exc",
        "subprotocol",
        "http2",
    )

    def __init__(
        self, config: ServerConfig | None = None, **options: Unpack[ServerOptions]
    ) -> None:
        if config is None:
            options.setdefault("compression", None)
            config = server_config(**options)
        elif options:
            raise TypeError("pass a ServerConfig or options as keyword arguments, not both")
        super().__init__(
            Role.SERVER,
            max_message_size=config.max_message_size,
            max_frame_size=config.max_frame_size,
            state=State.CONNECTING,
        )
        #: The options (shared by every connection of one server).
        self.config = config
        self._negotiated_deflate: PerMessageDeflate | None = None
        # The request's input in its two phases, in one slot (issue 14: 16 bytes per
        # connection): the parser until the request head is in (_parser), then the bytes that
        # followed it, kept until the 101 is sent (_early).
        self._head: RequestParser | bytearray | bytes = RequestParser(
            config.max_line, config.max_headers, config.max_header_bytes
        )
        #: The parsed request, once complete.
        self.request: Request | None = None
        #: The response sent, once sent.
        self.response: Response | None = None
        #: Why the handshake failed, if it did.
        self.handshake_exc: InvalidHandshake | None = None
        #: The subprotocol agreed on, if any.
        self.subprotocol: str | None = None
        #: Whether the handshake is an HTTP/2 extended CONNECT (RFC 8441), given by
        #: :meth:`receive_http2_request`: the answer is then a response head for the I/O layer
        #: to send as a HEADERS frame (``200`` accepts), and only its body is queued as bytes.
        self.http2 = False

    @property
    def _parser(self) -> RequestParser | None:
        """The request head's parser, until the head is parsed (then ``None``)."""
        head = self._head
        return head if isinstance(head, RequestParser) else None

    @_parser.setter
    def _parser(self, parser: RequestParser | None) -> None:
        if parser is not None:
            self._head = parser
        elif isinstance(self._head, RequestParser):
            self._head = b""

    @property
    def _early(self) -> bytearray | bytes:
        """Bytes after the request head, kept until the 101 is sent; ``b""`` when none (a
        bytearray once there are some): no buffer per connection for the common case."""
        head = self._head
        return b"" if isinstance(head, RequestParser) else head

    @_early.setter
    def _early(self, data: bytearray | bytes) -> None:
        self._head = data

    @property
    def origins(self) -> Sequence[str | None] | None:
        """``config.origins``: allowed ``Origin`` values (``None``: any)."""
        return self.config.origins

    @property
    def subprotocols(self) -> Sequence[str]:
        """``config.subprotocols``: the subprotocols this server speaks, by preference."""
        return self.config.subprotocols

    @property
    def select_subprotocol(self) -> SelectSubprotocol | None:
        """``config.select_subprotocol``."""
        return self.config.select_subprotocol

    @property
    def compression(self) -> DeflateOptions | None:
        """``config.compression``: permessage-deflate settings, ``None`` to decline offers."""
        return self.config.compression

    def receive_http2_request(self, request: Request) -> None:
        """Take the request of an HTTP/2 extended CONNECT stream (RFC 8441), instead of bytes.

        The I/O layer maps the HTTP/2 request onto ``request`` (see
        :func:`~.handshake.check_extended_connect`); this reports it as a :class:`Request`
        event, as a parsed HTTP/1.1 request would be. The stream's DATA then goes to
        :meth:`receive_data` and :meth:`data_to_send` gives the frames for its DATA.

        Raises:
            InvalidHandshake: a request was received already.
        """
        if self.state is not State.CONNECTING or self._parser is None:
            raise InvalidHandshake("a request was already received")
        self.http2 = True
        self._parser = None
        self._request_received(request)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes; while CONNECTING they are the request (a :class:`Request` event)."""
        if self.state is not State.CONNECTING:
            super().receive_data(data)
            return
        if self._parser is None:
            # The request is in; keep what follows for after the 101, within a bound.
            if self._early:
                self._early += data
            else:
                self._early = bytearray(data)
            if len(self._early) > MAX_EARLY_DATA:
                self._refuse(InvalidRequest("too much data before the handshake completed"))
            else:
                self._early_data_received()
            return
        try:
            request = self._parser.feed(bytes(data))
        except InvalidHandshake as exc:
            self._refuse(exc)
            return
        if request is not None:
            rest = self._parser.rest
            self._parser = None
            self._request_received(request)
            if rest:
                # Bytes that came with the request count against the early-data bound too.
                self.receive_data(rest)

    # Two handshake-only hooks, for a subclass whose requests carry a body (draft-76's key3:
    # see :mod:`.hixie76`). Neither is called once the connection is open.

    def _request_received(self, request: Request) -> None:
        """The request head is parsed: report it (a :class:`Request` event)."""
        self.request = request
        self._event(request)

    def _early_data_received(self) -> None:
        """More bytes followed the request head; they are in :attr:`_early`."""

    def receive_eof(self) -> None:
        """The peer closed its side; during the handshake that abandons it."""
        if self.state is State.CONNECTING and self.handshake_exc is None:
            self.handshake_exc = InvalidRequest("connection closed during the handshake")
        super().receive_eof()

    def _refuse(self, exc: InvalidHandshake) -> None:
        self.handshake_exc = exc
        self.send_response(error_response(exc.status, exc.reason, exc.headers))

    def close_expected(self) -> bool:
        """Close after a refused handshake too (the server always closes first)."""
        return self.state is State.CLOSED

    def accept(
        self,
        request: Request | None = None,
        *,
        extra_headers: HeadersLike | None = None,
    ) -> Response:
        """Validate the request and build the answer: a 101, or the error it deserves.

        The response is not sent: pass it to :meth:`send_response` (after changing it, if you
        like). On an error, :attr:`handshake_exc` says why.
        """
        request = request or self.request
        if request is None:
            raise InvalidHandshake("no request received yet")
        try:
            key: str | None = None
            if self.http2:
                check_extended_connect(request)
            else:
                key = check_request(request)
            self._check_origin(request)
            self.subprotocol = self._choose_subprotocol(request)
            extensions = self._negotiate_extensions(request)
        except InvalidHandshake as exc:
            self.handshake_exc = exc
            return error_response(exc.status, exc.reason, exc.headers)
        return build_accept_response(
            key, subprotocol=self.subprotocol, extensions=extensions, extra_headers=extra_headers
        )

    def _negotiate_extensions(self, request: Request) -> str | None:
        """Accept the first acceptable permessage-deflate offer; decline anything else."""
        self._negotiated_deflate = None
        offers = request.headers.get_all("Sec-WebSocket-Extensions")
        if self.compression is None or not offers:
            return None
        negotiated = server_negotiate(offers, self.compression)
        if negotiated is None:
            return None
        header, self._negotiated_deflate = negotiated
        return header

    def answer(self, response: object = None) -> Response:
        """Send the answer to the request: the server's handshake policy, in one place.

        ``response`` is what the application decided (``process_request``'s result):

        - ``None``: validate the request and upgrade (a 101), or send the 4xx it deserves
          (:meth:`accept`);
        - a :class:`Response`: sent as it is (the seed's ``putResponse``);
        - anything else (a hook that returned something else): 500.

        Every answer other than a 101 ends the connection and says so with
        ``Connection: close`` (unless it has a ``Connection`` header already). Returns the
        response sent; when it is not a 101, :attr:`handshake_exc` says why.

        On HTTP/2 (:attr:`http2`) the success is the ``200`` of :meth:`accept`, a refusal ends
        the stream only, and no ``Connection`` header is added (HTTP/2 has none); a hook's
        own 2xx to a CONNECT would read as a success to the client, so it is a 500 (a 2xx
        to a GET is a page, sent as it is).
        """
        if response is None:
            response = self.accept()
        elif not isinstance(response, Response):
            response = self.internal_error(
                f"process_request returned {response!r}, not a Response or None"
            )
        elif (
            self.http2
            and 200 <= response.status < 300
            and self.request is not None
            and self.request.method == "CONNECT"
        ):
            response = self.internal_error(
                f"process_request answered an HTTP/2 WebSocket request with {response.status}"
            )
        if self.http2:
            self.send_response(response)
            return response
        if response.status != 101 and "Connection" not in response.headers:
            response.headers.add("Connection", "close")
        self.send_response(response)
        return response

    def internal_error(self, reason: str = "process_request failed") -> Response:
        """The answer when the server could not decide (``process_request`` raised, or returned
        something else): ``500 Internal Server Error``, to pass to :meth:`answer`."""
        self.handshake_exc = InvalidHandshake(reason, HTTPStatus.INTERNAL_SERVER_ERROR)
        return Response(HTTPStatus.INTERNAL_SERVER_ERROR, body=b"Internal Server Error\n")

    def reject_busy(self) -> Response:
        """The answer when the server holds ``max_connections`` already: ``503 Service
        Unavailable`` with ``Retry-After: 1``, to pass to :meth:`send_response`."""
        text = "server full: too many connections, try again later"
        self.handshake_exc = InvalidHandshake(text, HTTPStatus.SERVICE_UNAVAILABLE)
        return error_response(HTTPStatus.SERVICE_UNAVAILABLE, text, [("Retry-After", "1")])

    def reject(self, status: int | HTTPStatus, text: str) -> Response:
        """A plain-text refusal, to pass to :meth:`send_response`."""
        self.handshake_exc = InvalidHandshake(text, HTTPStatus(status))
        return error_response(status, text)

    def _check_origin(self, request: Request) -> None:
        if self.origins is None:
            return
        origins = request.headers.get_all("Origin")
        origin = origins[0] if origins else None
        if origin not in self.origins:
            raise InvalidOrigin(
                "missing Origin header" if origin is None else f"origin not allowed: {origin}"
            )

    def _choose_subprotocol(self, request: Request) -> str | None:
        offered = request.subprotocols
        if self.select_subprotocol is not None:
            chosen = self.select_subprotocol(request, offered)
            if chosen is not None and chosen not in offered:
                raise NegotiationError(
                    f"select_subprotocol chose {chosen!r}, which the client did not offer"
                )
            return chosen
        for protocol in offered:
            if protocol in self.subprotocols:
                return protocol
        return None

    def send_response(self, response: Response) -> None:
        """Queue the response; a 101 opens the connection, anything else ends it."""
        if self.state is not State.CONNECTING:
            raise InvalidHandshake("a response was already sent")
        self.response = response
        self._parser = None
        if self.http2:
            # The head is the I/O layer's HEADERS frame; a refusal's body is the stream's DATA.
            opens = (
                response.status == 200
                and self.handshake_exc is None
                and self.request is not None
                and self.request.method == "CONNECT"
            )
            if not opens and response.body:
                self._queue(response.body)
        else:
            self._queue(response.serialize())
            opens = response.status == 101
        if opens:
            self.state = State.OPEN
            if (
                self._negotiated_deflate is not None
                and "Sec-WebSocket-Extensions" in response.headers
            ):
                self.use_deflate(self._negotiated_deflate)
            # The handshake is over: compact headers (unpacked again if the application asks).
            response.headers._compact()
            if self.request is not None:
                self.request.headers._compact()
            early = self._early
            if early:
                self._early = b""
                self.receive_data(bytes(early))
        else:
            if self.handshake_exc is None:
                self.handshake_exc = InvalidHandshake(
                    f"request answered with HTTP {response.status}",
                    HTTPStatus(response.status)
                    if response.status in HTTPStatus._value2member_map_
                    else None,
                )
            self.state = State.CLOSED
            self._discard = True
