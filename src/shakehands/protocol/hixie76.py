"""draft-hixie-thewebsocketprotocol-76, the seed's own protocol: opt-in, server side, no I/O.

No browser has spoken draft-76 since 2012; servers enable it with ``legacy_hixie76=True``. Then
:class:`Hixie76ServerProtocol` answers a request that carries ``Sec-WebSocket-Key1`` / ``Key2``
(and 8 bytes of body, *key3*) with the draft's MD5 challenge response, and frames messages the
draft's way: ``0x00`` UTF-8 text ``0xFF``, and ``0xFF 0x00`` to close. Any other request goes to
:class:`~.server.ServerProtocol` unchanged, so one server speaks both.

Theory of operation. The handshake is :class:`Hixie76ServerProtocol`'s, a
:class:`~.server.ServerProtocol`: the request head is parsed under the same limits, origins and
subprotocols are checked by the same code, and the state machine, close bookkeeping and failure
handling of :class:`~.connection.Connection` are reused. It differs in three handshake-only
places: a draft-76 request is held back (through the server's ``_request_received`` and
``_early_data_received`` hooks) until its 8 bytes of key3 are in;
:meth:`~Hixie76ServerProtocol.accept` answers it with the challenge response; and
:meth:`~Hixie76ServerProtocol.send_response` consumes key3 and, for a 101, installs a
:class:`Hixie76Framing` before any byte that followed the request is parsed.

The framing is that object's, chosen once, after the handshake: it holds the draft's receive
parser (with its state) and frame writer, and :meth:`Hixie76Framing.install` binds them over the
connection's RFC 6455 ones (``_parse``, ``_frame``, ``send_text``, ``send_binary``) as instance
attributes. So the RFC 6455 code has no draft-76 branch and tests no flag, and an RFC 6455
connection of a ``legacy_hixie76`` server runs exactly what a :class:`~.server.ServerProtocol`
runs. Limits are those of RFC 6455: a text frame larger than ``max_message_size`` (or
``max_frame_size``) fails the connection before it is buffered further, invalid UTF-8 fails it,
and so does any frame type but ``0x00`` text and the ``0xFF 0x00`` close. Draft-76 has no close
codes, no binary messages, no fragments and no pings: sending one raises
:class:`~.errors.InvalidState` (and :attr:`~Hixie76ServerProtocol.can_ping` is false); the close
frame received is reported as code 1005 (no status).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Unpack

from .config import ServerConfig, ServerOptions, server_config
from .connection import Connection, State
from .errors import (
    InvalidHandshake,
    InvalidRequest,
    InvalidState,
    InvalidUpgrade,
    PayloadTooBig,
    ProtocolError,
)
from .frames import Opcode
from .handshake import (
    Headers,
    HeadersLike,
    Request,
    Response,
    error_response,
    parse_token_list,
)
from .headers import to_headers
from .reader import decode_utf8
from .server import ServerProtocol

__all__ = [
    "Hixie76ServerProtocol",
    "Hixie76Framing",
    "is_hixie76_request",
    "key_number",
    "challenge_response",
    "KEY3_LENGTH",
]

#: The bytes of body that follow a draft-76 request head (``key3``).
KEY3_LENGTH = 8
_TEXT_START = 0x00
_SENTINEL = 0xFF
_CLOSE_FRAME = b"\xff\x00"
_OPCODES = frozenset(int(op) for op in Opcode)


def is_hixie76_request(request: Request) -> bool:
    """Whether ``request`` is a draft-76 handshake (``Sec-WebSocket-Key1`` and ``Key2``)."""
    headers = request.headers
    return (
        "Sec-WebSocket-Key1" in headers
        and "Sec-WebSocket-Key2" in headers
        and "Sec-WebSocket-Key" not in headers
    )


def key_number(key: str) -> int:
    """The 32-bit number a draft-76 key stands for: its digits divided by its spaces (§5.2).

    Raises:
        InvalidUpgrade: no digits, no spaces, a remainder, or a result beyond 32 bits.

    Example:
        >>> key_number("4 @1  46546xW%0l 1 5")
        829309203
    """
    digits = "".join(c for c in key if "0" <= c <= "9")
    spaces = key.count(" ")
    if not digits or spaces == 0:
        raise InvalidUpgrade("invalid draft-76 key: it needs digits and spaces")
    if len(digits) > 10 or int(digits) > 0xFFFFFFFF:
        raise InvalidUpgrade("invalid draft-76 key: the number exceeds 32 bits")
    number = int(digits)
    if number % spaces:
        raise InvalidUpgrade("invalid draft-76 key: its number is not a multiple of its spaces")
    return number // spaces


def challenge_response(key1: str, key2: str, key3: bytes) -> bytes:
    """The 16 bytes the server answers with: MD5 of the two key numbers and key3.

    Example:
        >>> challenge_response("4 @1  46546xW%0l 1 5", "12998 5 Y3 1  .P00", b"^n:ds[4U")
        b"8jKS'y:G*Co,Wxa-"
    """
    if len(key3) != KEY3_LENGTH:
        raise InvalidRequest(f"draft-76 requests carry {KEY3_LENGTH} bytes of body")
    challenge = struct.pack("!II", key_number(key1), key_number(key2)) + key3
    # MD5 is what the draft specifies; it is a handshake checksum, not a security measure.
    return hashlib.md5(challenge, usedforsecurity=False).digest()


class Hixie76Framing:
    """Draft-76 frames for one connection: the receive parser and the frame writer.

    :class:`Hixie76ServerProtocol` makes one when it sends its draft-76 101 and
    :meth:`installs <install>` it: its methods become instance attributes of the connection,
    over the RFC 6455 ones of :class:`~.connection.Connection` and :class:`~.reader.FrameReader`
    that they replace (:attr:`SEAMS`). The RFC 6455 code is left as it is and tests no flag:
    a connection without an installed framing object runs exactly the code a
    :class:`~.server.ServerProtocol` runs. What the connection's state machine does (the
    closing handshake, failures, limits' close codes) is unchanged: only bytes in and bytes out
    are the draft's.

    Args:
        connection: the connection it frames for; it must have an instance dictionary (every
            protocol class but :class:`~.connection.Connection` itself, which has slots only).
    """

    __slots__ = ("_connection", "_scanned")

    #: The connection's methods that :meth:`install` replaces with this object's.
    SEAMS = ("_parse", "_frame", "send_text", "send_binary", "send_fragment", "send_serialized")
    #: Draft-76 has no ping frame, and so no keepalive.
    can_ping = False

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        # Bytes of the current text frame already searched for 0xFF (a frame split across
        # reads is not searched again from its start).
        self._scanned = 0

    def install(self) -> None:
        """Frame the connection's traffic the draft's way from now on (there is no way back).

        The connection then refers to this object and this object to it: a cycle, freed by the
        garbage collector once the connection is dropped.
        """
        # Bound methods in the instance's dictionary shadow the class's: lookups of these names
        # on any other connection, and the code of the RFC 6455 paths, are unchanged.
        connection = self._connection
        connection._parse = self.parse  # type: ignore[method-assign]
        connection._frame = self.frame  # type: ignore[method-assign]
        connection.send_text = self.send_text  # type: ignore[method-assign]
        connection.send_binary = self.send_binary  # type: ignore[method-assign]
        connection.send_fragment = self.send_fragment  # type: ignore[method-assign]
        connection.send_serialized = self.send_serialized  # type: ignore[method-assign]
        # Broadcasts frame a message for it on its own, through send_text (set on the instance:
        # a Hixie76ServerProtocol has a __dict__, unlike the slotted ServerProtocol).
        connection.shares_frames = False  # type: ignore[misc]

    # -----------------------------------------------------------------------------------------
    # Sending
    # -----------------------------------------------------------------------------------------

    # Connection's send fast paths build RFC 6455 frames directly: these go through frame().
    def send_text(self, text: str, *, compress: bool = True) -> None:
        """Queue a text message: ``0x00``, its UTF-8, ``0xFF`` (never compressed)."""
        self._connection._send_data(Opcode.TEXT, text.encode("utf-8"), False)

    def send_binary(self, data: bytes | bytearray | memoryview, *, compress: bool = True) -> None:
        """Raise :class:`~.errors.InvalidState`: the draft has no binary messages."""
        self._connection._send_data(Opcode.BINARY, data, False)

    def send_fragment(
        self, data: str | bytes | bytearray | memoryview, *, fin: bool, compress: bool = True
    ) -> None:
        """Raise :class:`~.errors.InvalidState`, changing nothing: the draft has no fragments."""
        raise InvalidState("draft-76 connections send whole text messages only, not fragments")

    def send_serialized(self, frames: bytes) -> None:
        """Raise :class:`~.errors.InvalidState`: shared frames are RFC 6455 frames."""
        raise InvalidState("draft-76 connections cannot take RFC 6455 frames")

    def frame(self, opcode: int, payload: bytes | bytearray | memoryview, fin: bool = True) -> None:
        """Queue a frame: a whole text message or the close frame; anything else is refused."""
        if opcode == Opcode.CLOSE:
            # Draft-76 closes carry no code or reason.
            self._connection._queue(_CLOSE_FRAME)
        elif opcode == Opcode.TEXT and fin:
            # UTF-8 never contains 0xFF, so the sentinel cannot occur inside the text.
            self._connection._queue(b"\x00" + bytes(payload) + b"\xff")
        else:
            name = Opcode(opcode).name.lower() if opcode in _OPCODES else str(opcode)
            raise InvalidState(f"draft-76 connections send whole text messages only, not {name}")

    # -----------------------------------------------------------------------------------------
    # Receiving
    # -----------------------------------------------------------------------------------------

    def parse(self, buf: memoryview) -> int:
        """Consume the whole frames ``buf`` holds; return the end of the last one.

        Raises:
            PayloadTooBig: a text frame is larger than the limits, whole or not yet.
            InvalidPayload: a text frame is not UTF-8.
            ProtocolError: a frame type other than text and close.
        """
        connection = self._connection
        data = bytes(buf)
        limits = [
            n for n in (connection.max_message_size, connection.max_frame_size) if n is not None
        ]
        limit = min(limits) if limits else None
        pos, end = 0, len(data)
        while pos < end and not connection._discard:
            kind = data[pos]
            if kind == _TEXT_START:
                stop = data.find(b"\xff", pos + 1 + self._scanned)
                if stop < 0:
                    self._scanned = end - pos - 1
                    if limit is not None and self._scanned > limit:
                        raise PayloadTooBig(f"message exceeds limit of {limit} bytes")
                    return pos
                self._scanned = 0
                if limit is not None and stop - pos - 1 > limit:
                    raise PayloadTooBig(f"message exceeds limit of {limit} bytes")
                text = decode_utf8(data[pos + 1 : stop])
                connection._event(text)
                pos = stop + 1
            elif kind == _SENTINEL:
                if end - pos < 2:
                    return pos
                if data[pos + 1] != 0x00:
                    raise ProtocolError("unsupported draft-76 frame: 0xff with a length")
                pos += 2
                connection._control_frame(Opcode.CLOSE, b"")
            else:
                raise ProtocolError(f"unsupported draft-76 frame type {kind:#04x}")
        return pos


class Hixie76ServerProtocol(ServerProtocol):
    """A :class:`~.server.ServerProtocol` that also accepts draft-76 clients.

    Args:
        secure: whether the connection runs over TLS (for ``Sec-WebSocket-Location``).
        others: as for :class:`~.server.ServerProtocol`.

    Example:
        >>> p = Hixie76ServerProtocol()
        >>> p.receive_data(b"GET /demo HTTP/1.1\\r\\nHost: example.com\\r\\n"
        ...     b"Connection: Upgrade\\r\\nSec-WebSocket-Key2: 12998 5 Y3 1  .P00\\r\\n"
        ...     b"Upgrade: WebSocket\\r\\nSec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\\r\\n"
        ...     b"Origin: http://example.com\\r\\n\\r\\n^n:ds[4U")
        >>> p.send_response(p.accept())
        >>> p.data_to_send()[0].endswith(b"8jKS'y:G*Co,Wxa-")
        True
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        secure: bool = False,
        **options: Unpack[ServerOptions],
    ) -> None:
        super().__init__(config, **options)
        self.secure = secure
        # A draft-76 request, reported once its key3 is in too.
        self._held_request: Request | None = None
        # accept() built a draft-76 101 that is not sent yet.
        self._draft76_answer = False
        # The draft-76 framing, installed when that 101 is sent; None on an RFC 6455 connection.
        self._framing: Hixie76Framing | None = None

    @property
    def hixie76(self) -> bool:
        """Whether a draft-76 handshake was accepted: frames are draft-76 ones from then on."""
        return self._draft76_answer or self._framing is not None

    @property
    def can_ping(self) -> bool:
        """A draft-76 connection has no ping frame (and so no keepalive)."""
        framing = self._framing
        return True if framing is None else framing.can_ping

    # -----------------------------------------------------------------------------------------
    # Handshake (the framing is Hixie76Framing's, installed by send_response)
    # -----------------------------------------------------------------------------------------

    def _request_received(self, request: Request) -> None:
        """A draft-76 request is held (event and attribute) until its 8 bytes of key3 are in."""
        if is_hixie76_request(request):
            self._held_request = request
        else:
            super()._request_received(request)

    def _early_data_received(self) -> None:
        held = self._held_request
        if held is not None and len(self._early) >= KEY3_LENGTH and self.handshake_exc is None:
            self._held_request = None
            super()._request_received(held)

    def accept(
        self,
        request: Request | None = None,
        *,
        extra_headers: HeadersLike | None = None,
    ) -> Response:
        """Validate and answer: draft-76 for a Key1/Key2 request, RFC 6455 otherwise."""
        request = request or self.request
        if request is not None and is_hixie76_request(request):
            return self._accept_hixie76(request, extra_headers)
        return super().accept(request, extra_headers=extra_headers)

    def _accept_hixie76(self, request: Request, extra_headers: HeadersLike | None) -> Response:
        try:
            response = self._hixie76_response(request)
        except InvalidHandshake as exc:
            self.handshake_exc = exc
            return error_response(exc.status, exc.reason, exc.headers)
        for name, value in to_headers(extra_headers).items():
            response.headers.add(name, value)
        self._draft76_answer = True
        return response

    def _hixie76_response(self, request: Request) -> Response:
        headers = request.headers
        if request.method != "GET":
            raise InvalidRequest(f"draft-76 handshakes use GET, not {request.method}")
        if parse_token_list(headers.get_all("Upgrade")) != ["websocket"]:
            raise InvalidUpgrade("draft-76 handshake without Upgrade: WebSocket")
        if "upgrade" not in parse_token_list(headers.get_all("Connection")):
            raise InvalidUpgrade("draft-76 handshake without Connection: Upgrade")
        host = self._single(headers, "Host")
        origin = self._single(headers, "Origin")
        key1 = self._single(headers, "Sec-WebSocket-Key1")
        key2 = self._single(headers, "Sec-WebSocket-Key2")
        self._check_origin(request)
        self.subprotocol = self._choose_subprotocol(request)
        answer = challenge_response(key1, key2, bytes(self._early[:KEY3_LENGTH]))
        scheme = "wss" if self.secure else "ws"
        fields = [
            ("Upgrade", "WebSocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Origin", origin),
            ("Sec-WebSocket-Location", f"{scheme}://{host}{request.target}"),
        ]
        if self.subprotocol is not None:
            fields.append(("Sec-WebSocket-Protocol", self.subprotocol))
        return Response(101, Headers(fields), answer, "WebSocket Protocol Handshake")

    @staticmethod
    def _single(headers: Headers, name: str) -> str:
        values = headers.get_all(name)
        if len(values) != 1:
            raise InvalidUpgrade(
                f"missing {name} header" if not values else f"more than one {name} header"
            )
        return values[0]

    def send_response(self, response: Response) -> None:
        """Queue the response. After a draft-76 101, key3 is consumed, and a
        :class:`Hixie76Framing` is installed before any byte that followed it is parsed."""
        if self._draft76_answer and self.state is State.CONNECTING:
            self._draft76_answer = False
            if response.status == 101:
                self._early = self._early[KEY3_LENGTH:]
                self._framing = Hixie76Framing(self)
                self._framing.install()
        super().send_response(response)


def new_server_protocol(
    config: ServerConfig | None = None, *, secure: bool = False, **options: Unpack[ServerOptions]
) -> ServerProtocol:
    """A fresh server protocol for ``config`` (or for the options given as keyword arguments):
    :class:`Hixie76ServerProtocol` when ``legacy_hixie76`` is set (it speaks RFC 6455 too), else
    :class:`ServerProtocol`.

    ``secure``: whether the connection runs over TLS (a draft-76 answer names the scheme).
    """
    if config is None:
        config = server_config(**options)
    elif options:
        raise TypeError("pass a ServerConfig or options as keyword arguments, not both")
    if not config.legacy_hixie76:
        return ServerProtocol(config)
    return Hixie76ServerProtocol(config, secure=secure)
