"""The client side of the opening handshake, on top of :class:`~.connection.Connection`.

:class:`ClientProtocol` builds the upgrade request for a ``ws://`` or ``wss://`` URI, parses the
server's response and checks it (``Sec-WebSocket-Accept``, subprotocol), then reads frames. No I/O.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Unpack
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from .config import ClientConfig, ClientOptions, check_backoff, client_config
from .connection import Connection, Role, State
from .errors import (
    CloseCode,
    ConnectionRefused,
    HandshakeInterrupted,
    HostNotFound,
    InsecureRedirect,
    InvalidHandshake,
    InvalidResponse,
    InvalidStatus,
    InvalidURI,
    NegotiationError,
    NotWebSocketServer,
    OpenTimeout,
    RedirectError,
    RedirectLoop,
    ShakehandsError,
    TooManyRedirects,
)
from .extensions.permessage_deflate import client_accept, client_offer
from .handshake import (
    Headers,
    Request,
    Response,
    ResponseParser,
    build_request,
    check_response,
    generate_key,
)

__all__ = [
    "ClientProtocol",
    "WebSocketURI",
    "parse_uri",
    "wrong_scheme",
    "NOT_TLS_REASONS",
    "REDIRECT_STATUSES",
    "RETRY_CLOSE_CODES",
    "Backoff",
    "basic_authorization",
    "follow_redirect",
    "is_transient",
    "redact",
    "refusal",
]

#: The redirects a client follows (RFC 9110 §15.4); 300 and 304 are not redirects to follow.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

#: Close codes after which a reconnecting client connects again: the server went away (1001),
#: failed (1011), restarts (1012) or is overloaded (1013), or the connection was lost (1006).
RETRY_CLOSE_CODES = frozenset(
    {
        CloseCode.GOING_AWAY,
        CloseCode.ABNORMAL_CLOSURE,
        CloseCode.INTERNAL_ERROR,
        CloseCode.SERVICE_RESTART,
        CloseCode.TRY_AGAIN_LATER,
    }
)

#: How many bytes of a refusal's body its error message quotes.
BODY_EXCERPT = 80

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
    #: ``(user, password)`` from ``ws://user:pass@host/``, percent-decoded; sent as
    #: ``Authorization: Basic``. Not in the repr, so that it stays out of logs.
    user_info: tuple[str, str] | None = field(default=None, repr=False)


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
    user_info = None
    if parts.username is not None or parts.password is not None:
        if parts.password is None:
            raise InvalidURI(f"{redact(uri)!r} has a user but no password (use user:password@)")
        user_info = (unquote(parts.username or ""), unquote(parts.password))
    return WebSocketURI(
        secure, parts.hostname, port or (443 if secure else 80), resource, user_info
    )


def redact(uri: str) -> str:
    """``uri`` with its password replaced by ``***`` (for messages and logs).

    Example:
        >>> redact("ws://alice:secret@example.com/chat")
        'ws://alice:***@example.com/chat'
    """
    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
        netloc = f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return uri


def basic_authorization(user: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP Basic auth (RFC 7617), UTF-8 encoded.

    Example:
        >>> basic_authorization("alice", "secret")
        'Basic YWxpY2U6c2VjcmV0'
    """
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def follow_redirect(uri: str, response: Response, visited: list[str], max_redirects: int) -> str:
    """The URI a redirect ``response`` to a request for ``uri`` points to.

    ``visited`` lists the URIs requested so far in this attempt, the first one included (the
    target is appended to it);
    ``Location`` may be relative or absolute; ``http://`` and ``https://`` become ``ws://`` and
    ``wss://``. Credentials (``user:pass@``) are kept for the same scheme, host and port only.

    Raises:
        RedirectError: no ``Location`` header, or a target that is not a ws/wss/http/https URI.
        InsecureRedirect: ``wss://`` redirected to ``ws://``.
        RedirectLoop: the target was requested already.
        TooManyRedirects: more than ``max_redirects`` redirects.

    Example:
        >>> from shakehands import Response
        >>> visited = ["ws://a.example/x"]
        >>> follow_redirect(visited[-1], Response(302, {"Location": "/y"}), visited, 10)
        'ws://a.example/y'
    """
    status = response.status
    location = response.headers.get("Location")
    if location is None:
        raise RedirectError(f"HTTP {status} redirect without a Location header", response)
    target = urljoin(uri, location.strip())
    parts = urlsplit(target)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise RedirectError(
            f"HTTP {status} redirect to {location!r}, which is not a WebSocket URI", response
        )
    parts = parts._replace(scheme=scheme, fragment="")
    old = parse_uri(uri)
    if old.secure and scheme == "ws":
        raise InsecureRedirect(
            f"HTTP {status} redirect from {redact(uri)} to {redact(urlunsplit(parts))}: "
            "refusing to downgrade wss:// to ws://",
            response,
        )
    try:
        new = parse_uri(urlunsplit(parts))
    except InvalidURI as exc:
        raise RedirectError(f"HTTP {status} redirect to an invalid URI: {exc}", response) from None
    same_origin = (new.secure, new.host, new.port) == (old.secure, old.host, old.port)
    if new.user_info is None and old.user_info is not None and same_origin:
        credentials = urlsplit(uri).netloc.rpartition("@")[0]
        parts = parts._replace(netloc=f"{credentials}@{parts.netloc}")
    target = urlunsplit(parts)
    if target in visited:
        raise RedirectLoop(
            f"redirect loop: {redact(uri)} redirects (HTTP {status}) to {redact(target)}, "
            "requested already",
            response,
        )
    visited.append(target)
    if len(visited) - 1 > max_redirects:
        raise TooManyRedirects(
            f"more than {max_redirects} redirects (the last, HTTP {status}, to {redact(target)})",
            response,
        )
    return target


def is_transient(exc: BaseException) -> bool:
    """Whether a failed connection attempt is worth retrying (the reconnecting iterators' rule).

    Yes: connection refused, reset or aborted, timeouts, other network errors (``OSError``), a
    temporary DNS failure, a connection closed during the handshake, a 5xx answer. No: invalid
    URIs, 4xx and other answers, redirect errors, TLS certificate verification failures,
    unknown hosts, anything else.
    """
    if isinstance(exc, HostNotFound):
        return exc.errno == _EAI_AGAIN
    if isinstance(exc, (ConnectionRefused, OpenTimeout, HandshakeInterrupted)):
        return True
    if isinstance(exc, InvalidStatus):
        return type(exc) is InvalidStatus and 500 <= exc.response.status <= 599
    if isinstance(exc, ShakehandsError):
        return False
    return isinstance(exc, OSError)


#: ``socket.EAI_AGAIN`` on Linux and the BSDs (the core does not import socket); the I/O layers
#: pass getaddrinfo's code through, so only a temporary failure matches.
_EAI_AGAIN = -3


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter between connection attempts.

    The n-th delay (from 0) is drawn uniformly from ``[0, min(max_delay, initial_delay *
    factor ** n)]`` ("full jitter": clients that lost the same server do not come back
    together).

    Raises:
        TypeError, ValueError: as :func:`~shakehands.protocol.config.check_backoff`.

    Example:
        >>> delays = Backoff(initial_delay=1.0, factor=2.0, max_delay=8.0).delays()
        >>> [0 <= next(delays) <= bound for bound in (1, 2, 4, 8, 8)]
        [True, True, True, True, True]
    """

    initial_delay: float = 1.0
    factor: float = 1.618
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        check_backoff(self.initial_delay, self.factor, self.max_delay)

    @classmethod
    def from_config(cls, config: ClientConfig) -> Backoff:
        """The backoff of a client's options (``backoff_initial_delay``, ``backoff_factor``,
        ``backoff_max_delay``: validated already)."""
        return cls(config.backoff_initial_delay, config.backoff_factor, config.backoff_max_delay)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The delays before the 1st, 2nd, ... retry, forever."""
        uniform = (rng or random).uniform
        bound = self.initial_delay
        while True:
            yield uniform(0.0, bound)
            bound = min(self.max_delay, bound * self.factor)


def wrong_scheme(uri: WebSocketURI, *, server_speaks_tls: bool) -> InvalidResponse:
    """The error for a URI of the wrong scheme: ws:// for a TLS server (``server_speaks_tls``)
    or wss:// for a plain-text one. It says which scheme to use."""
    where = f"{uri.host}:{uri.port}"
    if server_speaks_tls:
        return InvalidResponse(f"{where} expects TLS: use a wss:// URI, not ws://")
    return InvalidResponse(f"{where} does not speak TLS: use a ws:// URI, not wss://")


def refusal(response: Response, http2: bool = False) -> InvalidStatus:
    """The error for a response other than 101 (``http2``: other than the ``200`` of an
    extended CONNECT): :class:`NotWebSocketServer` for 1xx and 2xx (a web page, not an
    endpoint), :class:`InvalidStatus` otherwise; the message has the status and the first
    bytes of the body."""
    status = f"HTTP {response.status} {response.reason}".rstrip()
    body = bytes(response.body[:BODY_EXCERPT])
    excerpt = (
        f"; body: {body!r}{'...' if len(response.body) > BODY_EXCERPT else ''}" if body else ""
    )
    if response.status < 300:
        return NotWebSocketServer(
            f"not a WebSocket server: answered {status} instead of "
            + ("200 to an extended CONNECT" if http2 else "101 Switching Protocols")
            + excerpt,
            response,
        )
    return InvalidStatus(f"server refused the upgrade: {status}{excerpt}", response)


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
        user_info = self.uri.user_info
        if user_info is not None and "Authorization" not in self.request.headers:
            self.request.headers.add("Authorization", basic_authorization(*user_info))
        self.response: Response | None = None
        self.handshake_exc: InvalidHandshake | None = None
        self.subprotocol: str | None = None
        #: Whether the server has sent nothing yet. A ws:// connection closed before any byte
        #: may have reached a TLS server: the I/O layers then check (see :func:`wrong_scheme`).
        self.nothing_received = True
        self._parser = ResponseParser()

    #: Whether the handshake runs as an HTTP/2 extended CONNECT (RFC 8441), set by
    #: :meth:`use_http2`: the request leaves as a HEADERS frame (:meth:`http2_request_fields`),
    #: the answer comes to :meth:`receive_http2_response`, and only frames are bytes.
    http2 = False

    def use_http2(self) -> None:
        """Make the handshake an HTTP/2 extended CONNECT (RFC 8441 §4), before it starts.

        :attr:`request` becomes ``CONNECT`` with no ``Upgrade``, ``Connection`` or
        ``Sec-WebSocket-Key`` (the stream is the upgrade); ``Host`` is the ``:authority``;
        version, origin, subprotocols, extensions and extra headers stay.

        Raises:
            InvalidHandshake: the handshake started already.
        """
        if self.state is not State.CONNECTING or not self.nothing_received:
            raise InvalidHandshake("the handshake started already")
        self.http2 = True
        dropped = {"upgrade", "connection", "sec-websocket-key"}
        headers = Headers(
            [(n, v) for n, v in self.request.headers.items() if n.lower() not in dropped]
        )
        self.request = Request("CONNECT", self.request.target, headers, version="HTTP/2")

    def http2_request_fields(self) -> list[tuple[str, str]]:
        """The HEADERS of the extended CONNECT (after :meth:`use_http2`): the pseudo-headers
        ``:method``, ``:protocol``, ``:scheme``, ``:path``, ``:authority``, then the rest in
        lower case (HTTP/2 field names are)."""
        headers = self.request.headers
        fields = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https" if self.uri.secure else "http"),
            (":path", self.request.target),
            (":authority", headers.get("Host") or self.uri.host),
        ]
        fields += [(n.lower(), v) for n, v in headers.items() if n.lower() != "host"]
        return fields

    def receive_http2_response(self, response: Response) -> None:
        """Take the answer to the extended CONNECT (its ``:status`` and headers).

        ``200`` opens the connection (a :class:`Response` event) once the subprotocol and
        extensions check out as for HTTP/1.1; any other status is a refusal
        (:attr:`handshake_exc`: :class:`InvalidStatus`, or :class:`NotWebSocketServer` for
        another 2xx), as a non-101 is on HTTP/1.1.

        Raises:
            InvalidHandshake: not an HTTP/2 handshake, or an answer was received already.
        """
        if not self.http2 or self.state is not State.CONNECTING or self.response is not None:
            raise InvalidHandshake("not waiting for an HTTP/2 answer")
        self.nothing_received = False
        self._got_response(response)

    def send_request(self) -> None:
        """Queue the upgrade request (on HTTP/2, nothing: it is a HEADERS frame)."""
        if not self.http2:
            self._queue(self.request.serialize())

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
            if response.status != (200 if self.http2 else 101):
                raise refusal(response, self.http2)
            key = None if self.http2 else self.key
            self.subprotocol = check_response(response, key, self.subprotocols)
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
        self._event(response)
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
                self.handshake_exc = HandshakeInterrupted(
                    "connection closed before any response"
                    if self.nothing_received
                    else "connection closed during the handshake"
                )
        super().receive_eof()

    def close_expected(self) -> bool:
        """Close at once after a failed handshake; otherwise as :class:`Connection` says.

        Over HTTP/2 (:attr:`http2`), the client ends its stream as soon as the closing
        handshake is done: RFC 6455 §7.1.1's wait for the server to close first is about TCP
        state (TIME_WAIT on the server), which a stream does not have; and some servers
        (hypercorn 0.18) never end the stream after a closing handshake the client started.
        """
        if self.handshake_exc is not None:
            return True
        if self.http2 and self.state is State.CLOSED:
            return True
        return super().close_expected()
