"""The exception hierarchy of shakehands.

Every error a peer can cause has a class here and carries what the connection must answer with: an
HTTP status during the opening handshake (:class:`InvalidHandshake`), or a close code once the
connection is open (:class:`ProtocolError` and its subclasses). This module knows nothing about I/O.
"""

from __future__ import annotations

import errno as errno_module
from http import HTTPStatus
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # http11 imports this module: the class is only needed for annotations
    from .http11 import Response

__all__ = [
    "ShakehandsError",
    "InvalidHandshake",
    "InvalidRequest",
    "HeadersTooLarge",
    "UnsupportedVersion",
    "InvalidUpgrade",
    "InvalidOrigin",
    "InvalidResponse",
    "InvalidStatus",
    "NegotiationError",
    "ProtocolError",
    "InvalidPayload",
    "PayloadTooBig",
    "PolicyViolation",
    "ConnectionClosed",
    "ConnectionClosedOK",
    "ConnectionClosedError",
    "InvalidState",
    "InvalidURI",
    "NotWebSocketServer",
    "HandshakeInterrupted",
    "RedirectError",
    "TooManyRedirects",
    "RedirectLoop",
    "InsecureRedirect",
    "HostNotFound",
    "ConnectionRefused",
    "OpenTimeout",
    "CloseCode",
]


class CloseCode:
    """Close codes of RFC 6455 §7.4.1 (and the IANA registry) used by shakehands."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # never on the wire
    ABNORMAL_CLOSURE = 1006  # never on the wire
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire


class ShakehandsError(Exception):
    """Base class of every exception raised by shakehands."""


# ---------------------------------------------------------------------------------------------
# Opening handshake
# ---------------------------------------------------------------------------------------------


class InvalidHandshake(ShakehandsError):
    """The opening handshake failed.

    On the server side, :attr:`status` is the HTTP status the request is answered with and
    :attr:`headers` any extra headers that answer needs (for example ``Sec-WebSocket-Version``).
    """

    status: HTTPStatus = HTTPStatus.BAD_REQUEST

    def __init__(
        self,
        reason: str,
        status: HTTPStatus | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        if status is not None:
            self.status = status
        self.headers: list[tuple[str, str]] = headers or []


class InvalidRequest(InvalidHandshake):
    """The client's request is not a valid HTTP/1.1 request (400)."""


class HeadersTooLarge(InvalidHandshake):
    """The request's headers exceed a limit (431)."""

    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


class UnsupportedVersion(InvalidHandshake):
    """``Sec-WebSocket-Version`` is not 13 (426, with ``Sec-WebSocket-Version: 13``)."""

    status = HTTPStatus.UPGRADE_REQUIRED

    def __init__(self, reason: str) -> None:
        super().__init__(reason, headers=[("Sec-WebSocket-Version", "13")])


class InvalidUpgrade(InvalidHandshake):
    """The request is valid HTTP but not a valid WebSocket upgrade (400, or 426 without Upgrade)."""


class InvalidOrigin(InvalidHandshake):
    """The ``Origin`` header is not allowed (403)."""

    status = HTTPStatus.FORBIDDEN


class NegotiationError(InvalidHandshake):
    """An extension or subprotocol could not be negotiated."""


class InvalidResponse(InvalidHandshake):
    """Client side: the server's response is not a valid WebSocket handshake response."""


class InvalidStatus(InvalidResponse):
    """Client side: the server answered with a status other than 101.

    :attr:`response` holds the full :class:`~shakehands.protocol.handshake.Response`.
    """

    def __init__(self, reason: str, response: Response) -> None:
        super().__init__(reason)
        #: The server's response: ``status``, ``headers``, ``body`` (read up to 64 KiB).
        self.response: Response = response


class NotWebSocketServer(InvalidStatus):
    """Client side: the server answered a plain HTTP response (1xx other than 101, or 2xx), as a
    web server does for a page: no WebSocket endpoint there.

    The message has the status and the first bytes of the body; :attr:`response` has them all.
    """


class HandshakeInterrupted(InvalidResponse):
    """Client side: the server closed the connection before its answer was complete (a server
    that is stopping drops the handshakes in progress; a reconnecting client tries again)."""


class RedirectError(InvalidStatus):
    """Client side: a redirect (301, 302, 303, 307, 308) that cannot be followed;
    :attr:`response` is the redirect."""


class TooManyRedirects(RedirectError):
    """Client side: more redirects in a row than ``max_redirects`` allows."""


class RedirectLoop(TooManyRedirects):
    """Client side: a redirect to a URI already visited in this attempt."""


class InsecureRedirect(RedirectError):
    """Client side: a ``wss://`` URI redirected to ``ws://`` (never followed: a downgrade)."""


class InvalidURI(ShakehandsError):
    """A ``ws://`` or ``wss://`` URI could not be parsed."""


# ---------------------------------------------------------------------------------------------
# Connecting (client side): OSError subclasses, so that ``except OSError`` still catches them
# ---------------------------------------------------------------------------------------------


class HostNotFound(ShakehandsError, OSError):
    """Client side: the server's host name could not be resolved (DNS failure).

    :attr:`errno` is ``getaddrinfo``'s error code (``socket.EAI_NONAME``, ``socket.EAI_AGAIN``
    for a temporary failure, ...).
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class ConnectionRefused(ShakehandsError, ConnectionRefusedError):
    """Client side: the server's host refused the TCP connection (nothing listens there)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errno = errno_module.ECONNREFUSED


class OpenTimeout(ShakehandsError, TimeoutError):
    """Client side: ``open_timeout`` ran out; :attr:`phase` says during what: ``"DNS lookup"``
    (blocking client), ``"TCP connect"``, ``"TLS handshake"`` or ``"WebSocket handshake"`` (its
    name is in the message too)."""

    def __init__(self, message: str, phase: str) -> None:
        super().__init__(message)
        #: What was going on when the time ran out.
        self.phase = phase


# ---------------------------------------------------------------------------------------------
# Open connection
# ---------------------------------------------------------------------------------------------


class ProtocolError(ShakehandsError):
    """The peer broke RFC 6455; the connection is failed with :attr:`code` (1002 by default)."""

    code: int = CloseCode.PROTOCOL_ERROR


class InvalidPayload(ProtocolError):
    """A text message or close reason is not valid UTF-8 (1007)."""

    code = CloseCode.INVALID_DATA


class PayloadTooBig(ProtocolError):
    """A frame or message exceeds ``max_frame_size`` or ``max_message_size`` (1009)."""

    code = CloseCode.MESSAGE_TOO_BIG


class PolicyViolation(ProtocolError):
    """The peer violated a policy of this endpoint (1008)."""

    code = CloseCode.POLICY_VIOLATION


class InvalidState(ShakehandsError):
    """An operation is not allowed in the connection's current state (a programming error)."""


class ConnectionClosed(ShakehandsError):
    """The connection is closed; raised by ``recv``/``send`` after the close.

    :attr:`code` and :attr:`reason` are those of the close frame received from the peer (1006 and
    ``""`` when none was received); :attr:`sent_code` and :attr:`sent_reason` those of the close
    frame we sent, if any. Without a close frame from the peer, the message says why we closed
    (``keepalive ping not answered within 20 s``, say).
    """

    def __init__(
        self, code: int, reason: str, sent_code: int | None = None, sent_reason: str = ""
    ) -> None:
        self.code = code
        self.reason = reason
        self.sent_code = sent_code
        self.sent_reason = sent_reason
        message = f"connection closed: {code} {reason}".rstrip()
        if code == CloseCode.ABNORMAL_CLOSURE and sent_code is not None:
            message += f" (no close frame from the peer); sent {sent_code}"
            if sent_reason:
                message += f" ({sent_reason})"
        super().__init__(message)


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed cleanly (1000 or 1001 both ways, or 1005 received)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error, or without a closing handshake (1006)."""
