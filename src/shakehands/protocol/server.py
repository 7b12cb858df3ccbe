"""The server side of the opening handshake, on top of :class:`~.connection.Connection`.

:class:`ServerProtocol` starts in CONNECTING, parses the request under limits, and lets the I/O
layer look at it (the seed's ``getRequest``) before answering with :meth:`ServerProtocol.accept`
(a 101, or the 4xx that the request deserves) or any :class:`Response` of its own (the seed's
``putResponse``), sent with :meth:`ServerProtocol.send_response`. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from http import HTTPStatus
from typing import Unpack

from .config import SelectSubprotocol, ServerConfig, ServerOptions, server_config
from .connection import Connection, Role, State
from .errors import InvalidHandshake, InvalidOrigin, InvalidRequest, NegotiationError
from .extensions.permessage_deflate import DeflateOptions, PerMessageDeflate, server_negotiate
from .handshake import (
    Headers,
    HeadersLike,
    Request,
    RequestParser,
    Response,
    build_accept_response,
    check_extended_connect,
    check_request,
    error_response,
)

__all__ = ["ServerProtocol", "SelectSubprotocol", "pack_request", "unpack_request"]


#: Bytes a client may send after its request, before our answer, that we keep (and then parse).
MAX_EARLY_DATA = 2**16


def _pack_address(address: object) -> str | None:
    """A request's ``remote_address`` as one line (see :func:`pack_request`), or ``None`` if it
    has another shape."""
    if address is None:
        return ""
    if type(address) is str:
        return None if "\n" in address else "=" + address
    if type(address) is tuple and len(address) == 2:
        # (host, port): every IPv4 peer.
        host, port = address
        if type(host) is str and type(port) is int and "\n" not in host and "\t" not in host:
            return "(" + host + "\t" + str(port)
        return None
    if type(address) is tuple and len(address) == 4:
        host, *numbers = address
        if (
            type(host) is str
            and "\n" not in host
            and "\t" not in host
            and all(type(n) is int for n in numbers)
        ):
            return "(" + "\t".join([host, *map(str, numbers)])
    return None


def _unpack_address(line: str) -> tuple[str, int] | tuple[str, int, int, int] | str | None:
    if not line:
        return None
    if line[0] == "=":
        return line[1:]
    host, *numbers = line[1:].split("\t")
    return (host, *map(int, numbers))  # type: ignore[return-value]  # 2 or 4 items


def pack_request(request: Request) -> str | None:
    """``request`` in one string, from which :func:`unpack_request` makes an equal
    :class:`Request`; ``None`` when one string cannot hold it exactly.

    The lines: method, target, version (empty for HTTP/1.1), ``@authority`` (empty for none),
    the remote address (empty for ``None``, ``=`` and the string for a Unix socket's,
    ``(`` and the fields separated by tabs for a ``(host, port)`` or IPv6 tuple), then the
    headers as :meth:`Headers._compact <.headers.Headers._compact>` packs them. Not packed:
    a subclass, a request with ``context`` set (the application's dictionary), a line feed
    in a field, headers that cannot be compacted, another kind of address.
    """
    if type(request) is not Request or request._context is not None:
        return None
    headers = request.headers
    address = _pack_address(request.remote_address)
    method, target, version, authority = (
        request.method,
        request.target,
        request.version,
        request.authority,
    )
    if (
        type(headers) is not Headers
        or address is None
        or type(method) is not str
        or type(target) is not str
        or type(version) is not str
        or not version
        or (authority is not None and type(authority) is not str)
    ):
        return None
    headers._compact()
    fields = headers._items
    if not isinstance(fields, str):
        return None  # pairs that one string cannot hold (see Headers._compact)
    version = "" if version == _HTTP11 else version
    authority = "" if authority is None else "@" + authority
    packed = "\n".join([method, target, version, authority, address, fields])
    # Exactly six lines, or the fields would not be found again; no control character but
    # the tab and the line feed, so that the table's codes cannot be mistaken.
    if packed.count("\n", 0, len(packed) - len(fields)) != 5 or _has_control(packed):
        return None
    for text, code in _TABLE:
        packed = packed.replace(text, code)
    return packed


def unpack_request(packed: str) -> Request:
    """The :class:`Request` that :func:`pack_request` packed (a new object, equal to it; its
    headers stay compacted until read)."""
    packed = packed.translate(_EXPAND)
    method, target, version, authority, address, fields = packed.split("\n", 5)
    headers = Headers.__new__(Headers)
    headers._items = fields
    headers._index = None
    return Request(
        _METHOD_NAMES.get(method, method),
        target,
        headers,
        version or _HTTP11,
        _unpack_address(address),
        authority[1:] if authority else None,
    )


_HTTP11 = "HTTP/1.1"
# What a packed request writes as one control character: the lines that every client sends
# (RFC 6455 requires the first five) or that browsers send, spelt as they send them, and the
# names of the others (as HPACK's static table does for HTTP/2). Longer texts before their
# prefixes. Packing replaces each text by its code, unpacking the reverse, which gives the
# same string back whatever was replaced where, since the codes occur nowhere else.
_TABLE = [
    (text, chr(code))
    for code, text in enumerate(
        [
            "\nHost:",
            "\nUpgrade:websocket",
            "\nConnection:Upgrade",
            "\nSec-WebSocket-Key:",
            "\nSec-WebSocket-Version:13",
            "\nSec-WebSocket-Extensions:permessage-deflate; client_max_window_bits",
            "\nSec-WebSocket-Extensions:",
            "\nSec-WebSocket-Protocol:",
            "\nConnection:keep-alive, Upgrade",
            "\nOrigin:",
            "\nUser-Agent:Mozilla/5.0 (",
            "\nUser-Agent:",
            "\nAccept-Encoding:gzip, deflate, br",
            "\nAccept-Language:",
            "\nCache-Control:no-cache",
            "\nPragma:no-cache",
            "\nAuthorization:",
            "\nCookie:",
        ],
        start=0x0B,  # after the tab (0x09) and the line feed (0x0A)
    )
]
_EXPAND = {ord(code): text for text, code in _TABLE}
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f]")
_CONTROL_BYTES = bytes([*range(0x09), *range(0x0B, 0x20)])


def _has_control(text: str) -> bool:
    """Whether ``text`` has a control character other than the tab and the line feed: for
    ASCII (every request but a few), two passes in C, a fifth of the regex's time."""
    if text.isascii():
        data = text.encode("ascii")
        return len(data.translate(None, _CONTROL_BYTES)) != len(data)
    return _CONTROL.search(text) is not None


# One shared string per common method (a method read from a packed request is a new one).
_METHOD_NAMES = {m: m for m in ("GET", "CONNECT", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")}


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
        "_request",
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
        # The parsed request (see :attr:`request`), or the same packed into one string
        # (:meth:`pack_request`) until it is next read.
        self._request: Request | str | None = None
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
    def request(self) -> Request | None:
        """The parsed request, once complete (``None`` before)."""
        request = self._request
        if type(request) is str:
            request = self._request = unpack_request(request)
        return request  # type: ignore[return-value]  # not a str: unpacked above

    @request.setter
    def request(self, request: Request | None) -> None:
        self._request = request

    def pack_request(self) -> None:
        """Keep the request in one string until :attr:`request` is next read, which makes it a
        :class:`Request` again, equal to this one (issue 14: an idle connection whose
        application never looks at its request holds ~130 bytes less, and on uvloop its
        address tuple too).

        For an I/O layer, once the handshake is over, when no code outside the core can hold
        the :class:`Request` object (no ``process_request`` or ``select_subprotocol`` hook saw
        it): only its identity changes. A request that cannot be packed exactly is kept as it
        is: one with ``context`` set, headers built by hand that one string cannot hold, a
        remote address of another shape (see :func:`pack_request`), one handed over by the I/O
        layer (:meth:`receive_http2_request`).
        """
        request = self._request
        if type(request) is Request and not self.http2:
            packed = pack_request(request)
            if packed is not None:
                self._request = packed

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
            if not self._receive_close_frame(data):
                super().receive_data(data)
            return
        parser = self._head  # the slot itself (see _parser and _early): read once
        if not isinstance(parser, RequestParser):
            # The request is in; keep what follows for after the 101, within a bound.
            if type(parser) is not bytearray:
                parser = bytearray(parser)  # b"" until the first bytes
            parser += data
            self._head = parser
            if len(parser) > MAX_EARLY_DATA:
                self._refuse(InvalidRequest("too much data before the handshake completed"))
            else:
                self._early_data_received()
            return
        try:
            request = parser.feed(bytes(data))
        except InvalidHandshake as exc:
            self._refuse(exc)
            return
        if request is not None:
            rest = parser.rest
            self._head = b""
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
        early = self._head  # the slot itself (see _parser and _early)
        if isinstance(early, RequestParser):
            early = self._head = b""
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
            # The handshake is over: compact headers (unpacked again if the application asks;
            # the core's 101 and a packed request are compacted already).
            response.headers._compact()
            request = self._request
            if isinstance(request, Request):
                request.headers._compact()
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
