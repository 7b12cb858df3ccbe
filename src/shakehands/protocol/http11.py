"""HTTP/1.1 messages of the opening handshake: requests, responses, and their parsers.

This module owns the bytes of an HTTP/1.1 head (RFC 9112): :class:`Request` and
:class:`Response`, serialising them, and parsing them incrementally under size limits. The
request parser (server side) raises :class:`~.errors.InvalidRequest` (400) or
:class:`~.errors.HeadersTooLarge` (431); the response parser (client side) raises
:class:`~.errors.InvalidResponse` in response wording, since there the server is at fault.
WebSocket rules (which headers an upgrade needs) are :mod:`.handshake`'s. No I/O. (Some 500
lines: both parsers share one head parser and its limits, and the two message types its output.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeAlias
from urllib.parse import parse_qsl

from ._accel import compiled
from .errors import HeadersTooLarge, InvalidHandshake, InvalidRequest, InvalidResponse
from .headers import (
    FIELD_VALUE_RE,
    TOKEN_RE,
    Headers,
    HeadersLike,
    check_headers,
    parse_token_list,
)

__all__ = [
    "Request",
    "Response",
    "BodyLike",
    "RequestParser",
    "ResponseParser",
    "error_response",
    "MAX_LINE",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_BODY",
]

#: Default limits on what the parser buffers (RFC 9112 suggests at least 8000 octets).
#: ``MAX_LINE``: the longest request or status line, in bytes (``max_line``).
MAX_LINE = 8192
#: The most header fields in a head (``max_headers``): more get 431.
MAX_HEADERS = 128
#: The most bytes of header fields in a head, all together (``max_header_bytes``): more get 431.
MAX_HEADER_BYTES = 8192
#: A response body read on a refused client handshake is cut at this size.
MAX_BODY = 65536

# Request target in origin-form: visible ASCII only.
_TARGET_RE = re.compile(rb"/[\x21-\x7e]*")
# Absolute-form (RFC 9112 §3.2.2: a server MUST accept it): scheme, authority, then origin-form.
_ABSOLUTE_TARGET_RE = re.compile(rb"(?i:https?|wss?)://([^/?#\x00-\x20\x7f-\xff]+)([\x21-\x7e]*)")


@dataclass(slots=True)
class Request:
    """A parsed HTTP request, as the server sees it before answering.

    This is what ``process_request`` hooks receive: the seed's ``getRequest``.
    """

    method: str
    target: str
    headers: Headers
    version: str = "HTTP/1.1"
    #: The peer's address, filled in by the I/O layer: ``(host, port)`` over TCP (IPv6 adds
    #: flow info and scope id), ``""`` over a Unix socket, ``None`` in the sans-I/O core.
    remote_address: tuple[str, int] | tuple[str, int, int, int] | str | None = None
    #: The authority of an absolute-form request target (``GET ws://host/path``), else ``None``.
    authority: str | None = None
    # Application state (see :attr:`context`), made on first use: most connections need none.
    _context: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def path(self) -> str:
        """The path of the request target, without the query."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The query string of the request target ('' when absent)."""
        return self.target.partition("?")[2]

    @property
    def context(self) -> dict[str, Any]:
        """Application state for this connection, set by ``process_request`` and read by the
        handler as ``ws.context`` (the same dictionary): who authenticated, what they asked.

        Example::

            def process_request(request):
                user = users.get(request.headers.get("Authorization"))
                if user is None:
                    return Response(401, body=b"who are you?")
                request.context["user"] = user

            async def handler(ws):
                await ws.send(f"hello {ws.context['user']}")
        """
        if self._context is None:
            self._context = {}
        return self._context

    @property
    def params(self) -> dict[str, list[str]]:
        """The query parameters: each name with all its values, in order.

        Names and values are percent-decoded (as UTF-8; ``+`` is a space) and parameters
        without a value are kept with ``""``. A new ``dict`` on each access: change it freely.
        :meth:`param` gives the first value of one name.

        Example:
            >>> request = Request("GET", "/chat?token=abc&room=a&room=b%20c&flag", Headers())
            >>> request.params
            {'token': ['abc'], 'room': ['a', 'b c'], 'flag': ['']}
            >>> request.param("token"), request.param("missing")
            ('abc', None)
        """
        params: dict[str, list[str]] = {}
        for name, value in parse_qsl(self.query, keep_blank_values=True):
            params.setdefault(name, []).append(value)
        return params

    def param(self, name: str, default: str | None = None) -> str | None:
        """The first value of the query parameter ``name`` (see :attr:`params`), or
        ``default`` when the query has no such parameter."""
        values = self.params.get(name)
        return values[0] if values else default

    @property
    def host(self) -> str | None:
        """The ``Host`` header; for an absolute-form target, its authority (RFC 9112 §3.2.2)."""
        if self.authority is not None:
            return self.authority
        return self.headers.get("Host")

    @property
    def origin(self) -> str | None:
        """The ``Origin`` header (sent by browsers), or ``None``."""
        return self.headers.get("Origin")

    @property
    def subprotocols(self) -> list[str]:
        """Subprotocols offered in ``Sec-WebSocket-Protocol``, in the client's order."""
        return [
            t.strip(" \t")
            for v in self.headers.get_all("Sec-WebSocket-Protocol")
            for t in v.split(",")
            if t.strip(" \t")
        ]

    @property
    def is_upgrade(self) -> bool:
        """Whether the request asks for a WebSocket at all: an ``Upgrade: websocket``, or, over
        HTTP/2, an extended CONNECT (RFC 8441; only ``:protocol = websocket`` reaches here)."""
        if self.method == "CONNECT" and self.version == "HTTP/2":
            return True
        return "websocket" in parse_token_list(self.headers.get_all("Upgrade"))

    def serialize(self) -> bytes:
        """The request's bytes on the wire."""
        lines = [f"{self.method} {self.target} {self.version}"]
        lines.extend(f"{n}: {v}" for n, v in self.headers.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


#: What ``Response(body=...)`` accepts: bytes-like, or a ``str`` (sent as UTF-8).
BodyLike: TypeAlias = bytes | bytearray | memoryview | str

#: The status line's reason phrase: visible ASCII, spaces and tabs (and obs-text).
_REASON_RE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


@dataclass(init=False)
class Response:
    """An HTTP response: the 101 that accepts an upgrade, or any other answer.

    Returning one from a ``process_request`` hook answers the request with it (the seed's
    ``putResponse``) instead of upgrading.

    Args:
        status: the status code, an ``int`` from 100 to 599 or an :class:`http.HTTPStatus`.
        headers: a :class:`Headers`, a ``dict`` (or any mapping) of names to values, or a
            list of ``(name, value)`` pairs. Names must be tokens and values may not contain
            line breaks.
        body: ``bytes`` (or ``bytearray``, ``memoryview``), or a ``str``, sent as UTF-8 with
            ``Content-Type: text/plain; charset=utf-8`` unless ``headers`` has a
            ``Content-Type``. ``Content-Length`` is added when the response is sent.
        reason: the reason phrase (default: the standard one for ``status``).

    Raises:
        TypeError, ValueError: an argument of the wrong type or value, when the response is
            built (not later, in the handshake).

    Example:
        >>> Response(404, body=b"no such room\\n").status
        404
        >>> r = Response(401, {"WWW-Authenticate": "Bearer"}, "missing token")
        >>> r.body, r.headers["Content-Type"]
        (b'missing token', 'text/plain; charset=utf-8')
        >>> Response("404")
        Traceback (most recent call last):
        ...
        TypeError: Response status must be an int such as 404 or HTTPStatus.NOT_FOUND, got '404'
    """

    status: int
    headers: Headers
    body: bytes
    reason: str
    # The head already serialised, with the headers it was made from, their items then (the
    # list, or the compacted string) and their number (see :meth:`_with_head`): the 101 of
    # every handshake, made from a template.
    _head: tuple[bytes, Headers, list[tuple[str, str]] | str, int] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __init__(
        self,
        status: int,
        headers: HeadersLike | None = None,
        body: BodyLike = b"",
        reason: str = "",
    ) -> None:
        if type(status) is bool or not isinstance(status, int):
            raise TypeError(
                "Response status must be an int such as 404 or HTTPStatus.NOT_FOUND, "
                f"got {status!r}"
            )
        if not 100 <= status <= 599:
            raise ValueError(f"Response status must be from 100 to 599, got {status!r}")
        self.status = int(status)
        self.headers = Headers() if headers is None else check_headers(headers, "Response headers")
        if isinstance(body, str):
            self.body = body.encode("utf-8")
            if "Content-Type" not in self.headers:
                self.headers.add("Content-Type", "text/plain; charset=utf-8")
        elif isinstance(body, (bytes, bytearray, memoryview)):
            self.body = bytes(body)
        else:
            hint = " (encode it first, e.g. json.dumps(...))" if isinstance(body, dict) else ""
            raise TypeError(f"Response body must be bytes or str, got {body!r}{hint}")
        if not isinstance(reason, str):
            raise TypeError(f"Response reason must be a str, got {reason!r}")
        if not _REASON_RE.fullmatch(reason):
            raise ValueError(f"Response reason may not contain line breaks, got {reason!r}")
        if not reason:
            try:
                reason = HTTPStatus(self.status).phrase
            except ValueError:
                reason = ""
        self.reason = reason

    @classmethod
    def _unchecked(cls, status: int, headers: Headers, body: bytes, reason: str) -> Response:
        """A response the core builds from parts it made or checked itself (the 101 of every
        handshake): the checks of ``__init__`` would cost each handshake a few microseconds
        for nothing."""
        response = object.__new__(cls)
        response.status = status
        response.headers = headers
        response.body = body
        response.reason = reason
        return response

    def _with_head(self, head: bytes) -> Response:
        """Keep ``head``, the bytes :meth:`serialize` would make of the status line and the
        headers as they are now, for :meth:`serialize` to send instead: the core's 101, made
        from a template. Used as long as the headers, status and reason stay as they are
        (headers only grow, :meth:`Headers.add`, and a compacted string is replaced when they
        do: its identity says they did not)."""
        headers = self.headers
        items = headers._items
        self._head = (head, headers, items, -1 if type(items) is str else len(items))
        return self

    def _kept_head(self) -> bytes | None:
        """The head kept by :meth:`_with_head`, if it still says what :meth:`serialize` would
        make (``None`` otherwise)."""
        kept = self._head
        if kept is None:
            return None
        head, made_with, items, count = kept
        if (
            made_with is self.headers
            and made_with._items is items
            and (count < 0 or len(items) == count)
            and self.status == 101
            and self.reason == "Switching Protocols"
        ):
            return head
        return None

    def _extend_head(self, pairs: list[tuple[str, str]], lines: bytes) -> bool:
        """Append header fields to a 101 whose head is kept (:meth:`_with_head`): ``pairs``,
        checked, and ``lines``, exactly their ``name: value`` lines (each ended by CRLF) as
        :meth:`serialize` writes them. The head and the headers grow together, the headers
        staying compacted if they were. ``False`` (nothing done) when no head is kept: the
        caller adds them the plain way."""
        head = self._kept_head()
        if head is None:
            return False
        headers = self.headers
        items = headers._items
        fields = [items] if type(items) is str and items else []
        if type(items) is str:
            for name, value in pairs:
                if ":" in name or "\n" in value:  # not compactable: see Headers._compact
                    break
                fields.append(name + ":" + value)
            else:
                headers._items = "\n".join(fields)
                pairs = []
        for name, value in pairs:
            headers.add(name, value)
        # The kept head ends with the blank line: the new fields go before it.
        self._with_head(head[:-2] + lines + b"\r\n")
        return True

    def serialize(self) -> bytes:
        """The response's bytes on the wire, adding ``Content-Length`` for a body if needed."""
        if self._head is not None:
            head = self._kept_head()
            # Once: the handshake is over after it, and an idle connection keeps its response.
            self._head = None
            if head is not None:
                return head + self.body
        headers = self.headers.items()
        if self.status != 101 and "Content-Length" not in self.headers:
            headers.append(("Content-Length", str(len(self.body))))
        lines = [f"HTTP/1.1 {self.status} {self.reason}"]
        lines.extend(f"{n}: {v}" for n, v in headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def error_response(status: int, text: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A plain-text answer that ends the connection: used for every refused handshake."""
    h = Headers(headers)
    h.add("Content-Type", "text/plain; charset=utf-8")
    h.add("Connection", "close")
    return Response(status, h, (text.rstrip("\n") + "\n").encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# Incremental parsing
# ---------------------------------------------------------------------------------------------


class _HeadParser:
    """Buffers the head of an HTTP message (start line and fields) under limits."""

    def __init__(
        self,
        max_line: int = MAX_LINE,
        max_headers: int = MAX_HEADERS,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.max_line = max_line
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.buffer = bytearray()
        self._start_checked = False

    def _reject(self, reason: str) -> InvalidHandshake:
        """The error for a malformed head (the wording and class of this side)."""
        raise NotImplementedError

    def _too_large(self, reason: str) -> InvalidHandshake:
        """The error for a head over ``max_headers`` / ``max_header_bytes``."""
        raise NotImplementedError

    def _check_start(self, start: bytes | bytearray) -> None:
        """Cheap checks on the start of a line not yet complete."""

    def _check_start_line(self, line: bytes) -> None:
        """Checks on the complete start line, made once, before the rest of the head is in."""

    def feed_head(self, data: bytes) -> tuple[bytes, list[tuple[str, str]], bytes] | None:
        """Add bytes; return ``(start line, fields, rest)`` once the head is complete."""
        found = self._buffer_head(data)
        if found is None:
            return None
        buf, end = found
        head = bytes(buf[:end])
        rest = bytes(buf[end + 4 :])
        start, _, field_block = head.partition(b"\r\n")
        if len(start) > self.max_line:
            raise self._reject("request line too long")
        if not self._start_checked:
            # The same order of checks as when the head arrives in pieces: same verdict.
            self._start_checked = True
            self._check_start_line(start)
        if len(field_block) > self.max_header_bytes:
            raise self._too_large("headers too large")
        return start, self._parse_fields(field_block), rest

    def _buffer_head(self, data: bytes) -> tuple[bytes | bytearray, int] | None:
        """Add bytes; once the head is complete, return the bytes that hold it and where it
        ends (its final CRLFCRLF), and empty the buffer. Until then, check what can be."""
        buf: bytes | bytearray = self.buffer
        if buf or not isinstance(data, bytes):
            searched = max(0, len(buf) - 3)
            buf += data
        else:
            # The whole head in one read (the usual case): no copy into the buffer.
            searched = 0
            buf = data
        end = buf.find(b"\r\n\r\n", searched)
        if end < 0:
            if buf is data:
                self.buffer = buf = bytearray(data)
            line_end = buf.find(b"\r\n")
            # Allow for the start of a CRLF (or CRLFCRLF) split across two reads: the same bytes
            # must give the same answer however they arrive.
            if line_end < 0:
                self._check_start(buf)
                if len(buf) > self.max_line + 1:
                    raise self._reject("request line too long")
            elif line_end > self.max_line:
                raise self._reject("request line too long")
            else:
                if not self._start_checked:
                    # A start line that can never be valid (an SSH banner, say) fails now
                    # rather than after open_timeout.
                    self._start_checked = True
                    self._check_start_line(bytes(buf[:line_end]))
                if len(buf) - line_end > self.max_header_bytes + 5:
                    raise self._too_large("headers too large")
            return None
        if buf is not data:
            self.buffer = bytearray()
        return buf, end

    def _parse_fields(self, block: bytes) -> list[tuple[str, str]]:
        if not block:
            return []
        lines = block.split(b"\r\n")
        if len(lines) > self.max_headers:
            raise self._too_large(f"too many headers (at most {self.max_headers})")
        fields = []
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon or not name:
                raise self._reject("invalid header line")
            if line[:1] in (b" ", b"\t"):
                # RFC 9112 §5.2: obsolete line folding is rejected.
                raise self._reject("obsolete line folding in headers")
            if not TOKEN_RE.fullmatch(name):
                raise self._reject("invalid header name")
            value = value.strip(b" \t")
            if not FIELD_VALUE_RE.fullmatch(value):
                raise self._reject("invalid character in header value")
            fields.append((name.decode("ascii"), value.decode("latin-1")))
        return fields


_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")}
# The same strings, looked up by the C parser's str: one shared string per common method.
_METHOD_NAMES = {m: m for m in _METHODS.values()}

# What the C parser returns: method, target, authority, fields, index of lower-cased names.
_ParsedHead: TypeAlias = tuple[str, str, str | None, list[tuple[str, str]], dict[str, list[str]]]
#: The request head parsed in C (``shakehands._speedups``), or ``None``: pure Python. (Tests
#: set it to ``None`` to run the same cases against both parsers.)
_parse_request_head: Callable[[bytes | bytearray, int, int, int, int], _ParsedHead] | None = (
    compiled("parse_request_head")
)


class RequestParser(_HeadParser):
    """Parses one HTTP/1.1 request head, incrementally.

    Feed bytes with :meth:`feed` until it returns a :class:`Request`. Bytes after the head (a client
    that sends frames before reading the response) are kept in :attr:`rest`.

    Raises:
        InvalidRequest, HeadersTooLarge: as soon as the bytes cannot be a valid request head.
    """

    #: Bytes after the head (frames a client sent before reading the response).
    rest = b""

    def _reject(self, reason: str) -> InvalidHandshake:
        return InvalidRequest(reason)

    def _too_large(self, reason: str) -> InvalidHandshake:
        # 431 (RFC 6585 §5): the one limit a client can fix by sending less.
        return HeadersTooLarge(f"request {reason}")

    def _check_start(self, start: bytes | bytearray) -> None:
        # Fail at once on bytes that cannot start a request line (binary garbage, a TLS
        # ClientHello on a plain port) rather than waiting for a CRLF that never comes.
        # One regex match, in C: a loop in Python over the whole buffer on every read would be
        # quadratic in CPU for a peer that sends a long token one byte at a time.
        method = TOKEN_RE.match(start)
        end = method.end() if method else 0
        if end < len(start) and (end == 0 or start[end] != 0x20):
            raise InvalidRequest("invalid request line")

    def feed(self, data: bytes) -> Request | None:
        """Add bytes; return the request once its head is complete, else ``None``."""
        if _parse_request_head is not None:
            return self._feed_compiled(data)
        parsed = self.feed_head(data)
        if parsed is None:
            return None
        start, fields, self.rest = parsed
        method, target, authority = self._parse_request_line(start)
        return Request(method, target, Headers(fields), authority=authority)

    def _feed_compiled(self, data: bytes) -> Request | None:
        """:meth:`feed` with the head parsed in C (``_speedups.parse_request_head``): the same
        checks in the same order, the same errors; the index of lower-cased names comes along,
        ready for :func:`.handshake.check_request`."""
        assert _parse_request_head is not None
        found = self._buffer_head(data)
        if found is None:
            return None
        buf, end = found
        self._start_checked = True
        try:
            method, target, authority, fields, index = _parse_request_head(
                buf, end, self.max_line, self.max_headers, self.max_header_bytes
            )
        except ValueError as exc:
            reason, status = exc.args
            if status == 431:
                raise HeadersTooLarge(reason) from None
            raise InvalidRequest(reason) from None
        self.rest = bytes(buf[end + 4 :])
        headers = Headers.__new__(Headers)
        headers._items = fields
        headers._index = index
        return Request(_METHOD_NAMES.get(method, method), target, headers, authority=authority)

    def _check_start_line(self, line: bytes) -> None:
        self._parse_request_line(line)

    @staticmethod
    def _parse_request_line(start: bytes) -> tuple[str, str, str | None]:
        parts = start.split(b" ")
        if len(parts) != 3:
            raise InvalidRequest("invalid request line")
        method, target, version = parts
        if not TOKEN_RE.fullmatch(method):
            raise InvalidRequest("invalid request line")
        if version != b"HTTP/1.1":
            if re.fullmatch(rb"HTTP/\d\.\d", version):
                raise InvalidRequest(
                    f"unsupported HTTP version {version.decode()}: WebSocket needs HTTP/1.1"
                )
            raise InvalidRequest("invalid request line")
        authority = None
        absolute = _ABSOLUTE_TARGET_RE.fullmatch(target)
        if absolute is not None:
            # Kept as origin-form in ``target``, so that ``path`` means the same for every client.
            authority = absolute.group(1).decode("ascii")
            target = absolute.group(2)
            if not target.startswith(b"/"):
                target = b"/" + target
        if not _TARGET_RE.fullmatch(target):
            raise InvalidRequest("invalid request target")
        # The common methods as one shared string each, not one per connection kept open.
        name = _METHODS.get(method)
        if name is None:
            name = method.decode("ascii")
        return name, target.decode("ascii"), authority


# HTTP/1.0 answers are parsed too (an old server or a proxy's error page says what it is);
# only a 101 must be HTTP/1.1.
_STATUS_PREFIX = b"HTTP/1."
_STATUS_LINE_RE = re.compile(rb"HTTP/1\.([01]) (\d{3})(?: (.*))?")
#: The most bytes of a bad status line quoted in the error.
_EXCERPT = 60


def invalid_status_line(line: bytes | bytearray) -> InvalidResponse:
    """The error for a response that does not start with a valid status line: it quotes the
    line (cut short), so that what answered can be recognised."""
    line = bytes(line).partition(b"\r\n")[0]
    excerpt = repr(line[:_EXCERPT]) + ("..." if len(line) > _EXCERPT else "")
    return InvalidResponse(f"invalid status line: {excerpt}")


class ResponseParser(_HeadParser):
    """Parses one HTTP/1.1 response (client side), incrementally.

    A 101 response is complete at the end of its head; any other status is read with its body
    (``Content-Length`` bytes, at most :data:`MAX_BODY`), so that the client can report it.
    """

    #: Bytes after the response (frames the server sent right after its 101).
    rest = b""
    _pending: Response | None = None
    _body_length = 0

    def _reject(self, reason: str) -> InvalidHandshake:
        return InvalidResponse(reason.replace("request line", "status line"))

    def _too_large(self, reason: str) -> InvalidHandshake:
        # Not HeadersTooLarge: that is the server's 431 for a request; this is the server's fault.
        return InvalidResponse(f"response {reason}")

    def _check_start(self, start: bytes | bytearray) -> None:
        # Fail at once on bytes that cannot start "HTTP/1." (a TLS record, an SSH banner)
        # rather than waiting for a line end that may never come.
        if not _STATUS_PREFIX.startswith(bytes(start[: len(_STATUS_PREFIX)])):
            raise invalid_status_line(start)

    def _check_start_line(self, line: bytes) -> None:
        if _STATUS_LINE_RE.fullmatch(line) is None:
            raise invalid_status_line(line)

    def feed(self, data: bytes) -> Response | None:
        """Add bytes; return the response once complete, else ``None``."""
        if self._pending is not None:
            self.rest += data
            return self._finish_body()
        parsed = self.feed_head(data)
        if parsed is None:
            return None
        start, fields, self.rest = parsed
        m = _STATUS_LINE_RE.fullmatch(start)
        if m is None:
            raise invalid_status_line(start)
        try:
            response = Response(
                int(m.group(2)), Headers(fields), reason=(m.group(3) or b"").decode("latin-1")
            )
        except ValueError:  # a status out of range, a control character in the reason
            raise invalid_status_line(start) from None
        if response.status == 101:
            if m.group(1) != b"1":
                raise InvalidResponse("HTTP/1.0 101: switching to WebSocket needs HTTP/1.1")
            return response
        try:
            self._body_length = min(int(response.headers.get("Content-Length", "0") or 0), MAX_BODY)
        except ValueError:
            self._body_length = 0
        self._pending = response
        return self._finish_body()

    def _finish_body(self) -> Response | None:
        assert self._pending is not None
        if len(self.rest) < self._body_length:
            return None
        self._pending.body = self.rest[: self._body_length]
        self.rest = self.rest[self._body_length :]
        return self._pending

    def feed_eof(self) -> Response | None:
        """The server closed the connection: return a pending non-101 response, body as read."""
        if self._pending is not None:
            self._pending.body = self.rest[: self._body_length]
            return self._pending
        return None
