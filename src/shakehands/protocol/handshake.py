"""The opening handshake of RFC 6455 §4: HTTP/1.1 upgrade requests and responses.

This module owns the HTTP side of a WebSocket connection: incremental parsing of a request or a
response under size limits, validation of an upgrade request (server side) and of the server's
answer (client side), and building both. Every failure is an :class:`InvalidHandshake` carrying the
HTTP status to answer with. It performs no I/O and knows nothing about frames.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TypeAlias
from urllib.parse import urlsplit

from .errors import (
    HeadersTooLarge,
    InvalidHandshake,
    InvalidRequest,
    InvalidResponse,
    InvalidUpgrade,
    UnsupportedVersion,
)

__all__ = [
    "Headers",
    "HeadersLike",
    "Request",
    "Response",
    "RequestParser",
    "ResponseParser",
    "accept_key",
    "generate_key",
    "check_request",
    "build_accept_response",
    "build_request",
    "check_response",
    "error_response",
    "parse_token_list",
    "GUID",
    "MAX_LINE",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
]

#: RFC 6455 §1.3.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: Default limits on what the parser buffers (RFC 9112 suggests at least 8000 octets).
MAX_LINE = 8192
MAX_HEADERS = 128
MAX_HEADER_BYTES = 8192
#: A response body read on a refused client handshake is cut at this size.
MAX_BODY = 65536

# RFC 9110 §5.6.2: token = 1*tchar.
_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Field values: visible ASCII, SP, HTAB and obs-text; never other control characters.
_VALUE_RE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
# Request target in origin-form: visible ASCII only.
_TARGET_RE = re.compile(rb"/[\x21-\x7e]*")
# Absolute-form (RFC 9112 §3.2.2: a server MUST accept it): scheme, authority, then origin-form.
_ABSOLUTE_TARGET_RE = re.compile(rb"(?i:https?|wss?)://([^/?#\x00-\x20\x7f-\xff]+)([\x21-\x7e]*)")


class Headers:
    """HTTP headers: an ordered multi-mapping with case-insensitive names.

    Example:
        >>> h = Headers([("Host", "example.com")])
        >>> h["host"]
        'example.com'
    """

    __slots__ = ("_items", "_index")

    # Memory: the pairs are the headers; the index of lower-cased names is built on the first
    # lookup only. Once the handshake is over, :meth:`_compact` drops the index and packs the
    # pairs into one string (an idle connection keeps its request for ``ws.request``: one
    # string is a fifth of the size of a list of tuples of strings); they are unpacked again on
    # the next access.

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # The pairs as given (the parser's list of tuples is not copied pair by pair). When
        # compacted: one string, "name:value" lines joined by "\n" (names are tokens, without
        # ":"; parsed values never contain "\n", see _VALUE_RE; _compact checks the rest).
        self._items: list[tuple[str, str]] | str = list(items)
        self._index: dict[str, list[str]] | None = None

    def _pairs(self) -> list[tuple[str, str]]:
        """The pairs (unpacked now if they were compacted)."""
        items = self._items
        if isinstance(items, str):
            unpacked: list[tuple[str, str]] = []
            if items:
                for line in items.split("\n"):
                    name, _, value = line.partition(":")
                    unpacked.append((name, value))
            self._items = items = unpacked
        return items

    def _lookup(self) -> dict[str, list[str]]:
        """The index of lower-cased names (built now if it is not there)."""
        index = self._index
        if index is None:
            index = {}
            for name, value in self._pairs():
                index.setdefault(name.lower(), []).append(value)
            self._index = index
        return index

    def _compact(self) -> None:
        """Drop the index and pack the pairs into one string: to keep idle connections small.

        Nothing is lost: the next access unpacks them. Pairs that could not be told apart
        once packed (a name with ":" or a value with a line feed, only possible for headers
        built by hand) are left as they are.
        """
        self._index = None
        items = self._items
        if isinstance(items, str):
            return
        for name, value in items:
            if ":" in name or "\n" in name or "\n" in value:
                return
        self._items = "\n".join([f"{name}:{value}" for name, value in items])

    def add(self, name: str, value: str) -> None:
        """Append a header, keeping any existing ones of the same name."""
        self._pairs().append((name, value))
        if self._index is not None:
            self._index.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        values = (self._index or self._lookup()).get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order (an empty list if absent)."""
        return list((self._index or self._lookup()).get(name.lower(), ()))

    def __getitem__(self, name: str) -> str:
        values = (self._index or self._lookup()).get(name.lower())
        if not values:
            raise KeyError(name)
        return values[0]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in (self._index or self._lookup())

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._pairs())

    def __len__(self) -> int:
        return len(self._pairs())

    def items(self) -> list[tuple[str, str]]:
        """All ``(name, value)`` pairs in order, names as received."""
        return list(self._pairs())

    def __repr__(self) -> str:
        return f"Headers({self._pairs()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        mine, theirs = self._pairs(), other._pairs()
        return [(n.lower(), v) for n, v in mine] == [(n.lower(), v) for n, v in theirs]

    __hash__ = None  # type: ignore[assignment]


HeadersLike: TypeAlias = Headers | dict[str, str] | Iterable[tuple[str, str]]


def _to_headers(headers: HeadersLike | None) -> Headers:
    if headers is None:
        return Headers()
    if isinstance(headers, Headers):
        return headers
    if isinstance(headers, dict):
        return Headers(headers.items())
    return Headers(headers)


def parse_token_list(values: list[str]) -> list[str]:
    """Split comma-separated header values into lower-cased tokens, dropping empty elements."""
    return [t.strip(" \t").lower() for v in values for t in v.split(",") if t.strip(" \t")]


@dataclass
class Request:
    """A parsed HTTP request, as the server sees it before answering.

    This is what ``process_request`` hooks receive: the seed's ``getRequest``.
    """

    method: str
    target: str
    headers: Headers
    version: str = "HTTP/1.1"
    #: The peer's address, filled in by the I/O layer (``None`` in the sans-I/O core).
    remote_address: tuple[str, int] | None = None
    #: The authority of an absolute-form request target (``GET ws://host/path``), else ``None``.
    authority: str | None = None

    @property
    def path(self) -> str:
        """The path of the request target, without the query."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The query string of the request target ('' when absent)."""
        return self.target.partition("?")[2]

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
        """Whether the request asks for a WebSocket upgrade at all."""
        return "websocket" in parse_token_list(self.headers.get_all("Upgrade"))

    def serialize(self) -> bytes:
        """The request's bytes on the wire."""
        lines = [f"{self.method} {self.target} {self.version}"]
        lines.extend(f"{n}: {v}" for n, v in self.headers.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Response:
    """An HTTP response: the 101 that accepts an upgrade, or any other answer.

    Returning one from a ``process_request`` hook answers the request with it (the seed's
    ``putResponse``) instead of upgrading.

    Example:
        >>> Response(404, body=b"no such room\\n").status
        404
    """

    status: int
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    reason: str = ""

    def __post_init__(self) -> None:
        self.status = int(self.status)
        if not isinstance(self.headers, Headers):
            self.headers = _to_headers(self.headers)
        if not self.reason:
            try:
                self.reason = HTTPStatus(self.status).phrase
            except ValueError:
                self.reason = ""

    def serialize(self) -> bytes:
        """The response's bytes on the wire, adding ``Content-Length`` for a body if needed."""
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

    def __init__(self, max_line: int, max_headers: int, max_header_bytes: int) -> None:
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
        buf = self.buffer
        searched = max(0, len(buf) - 3)
        buf += data
        end = buf.find(b"\r\n\r\n", searched)
        if end < 0:
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
        head = bytes(buf[:end])
        rest = bytes(buf[end + 4 :])
        self.buffer = bytearray()
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
            if not _TOKEN_RE.fullmatch(name):
                raise self._reject("invalid header name")
            value = value.strip(b" \t")
            if not _VALUE_RE.fullmatch(value):
                raise self._reject("invalid character in header value")
            fields.append((name.decode("ascii"), value.decode("latin-1")))
        return fields


class RequestParser(_HeadParser):
    """Parses one HTTP/1.1 request head, incrementally.

    Feed bytes with :meth:`feed` until it returns a :class:`Request`. Bytes after the head (a client
    that sends frames before reading the response) are kept in :attr:`rest`.

    Raises:
        InvalidRequest, HeadersTooLarge: as soon as the bytes cannot be a valid request head.
    """

    def __init__(
        self,
        max_line: int = MAX_LINE,
        max_headers: int = MAX_HEADERS,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        super().__init__(max_line, max_headers, max_header_bytes)
        self.rest = b""

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
        method = _TOKEN_RE.match(start)
        end = method.end() if method else 0
        if end < len(start) and (end == 0 or start[end] != 0x20):
            raise InvalidRequest("invalid request line")

    def feed(self, data: bytes) -> Request | None:
        """Add bytes; return the request once its head is complete, else ``None``."""
        parsed = self.feed_head(data)
        if parsed is None:
            return None
        start, fields, self.rest = parsed
        method, target, authority = self._parse_request_line(start)
        return Request(method, target, Headers(fields), authority=authority)

    def _check_start_line(self, line: bytes) -> None:
        self._parse_request_line(line)

    @staticmethod
    def _parse_request_line(start: bytes) -> tuple[str, str, str | None]:
        parts = start.split(b" ")
        if len(parts) != 3:
            raise InvalidRequest("invalid request line")
        method, target, version = parts
        if not _TOKEN_RE.fullmatch(method):
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
        return method.decode("ascii"), target.decode("ascii"), authority


class ResponseParser(_HeadParser):
    """Parses one HTTP/1.1 response (client side), incrementally.

    A 101 response is complete at the end of its head; any other status is read with its body
    (``Content-Length`` bytes, at most :data:`MAX_BODY`), so that the client can report it.
    """

    def __init__(
        self,
        max_line: int = MAX_LINE,
        max_headers: int = MAX_HEADERS,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        super().__init__(max_line, max_headers, max_header_bytes)
        self.rest = b""
        self._pending: Response | None = None
        self._body_length = 0

    def _reject(self, reason: str) -> InvalidHandshake:
        return InvalidResponse(reason.replace("request line", "status line"))

    def _too_large(self, reason: str) -> InvalidHandshake:
        # Not HeadersTooLarge: that is the server's 431 for a request; this is the server's fault.
        return InvalidResponse(f"response {reason}")

    def feed(self, data: bytes) -> Response | None:
        """Add bytes; return the response once complete, else ``None``."""
        if self._pending is not None:
            self.rest += data
            return self._finish_body()
        parsed = self.feed_head(data)
        if parsed is None:
            return None
        start, fields, self.rest = parsed
        m = re.fullmatch(rb"HTTP/1\.1 (\d{3})(?: (.*))?", start)
        if m is None:
            raise InvalidResponse("invalid status line")
        response = Response(
            int(m.group(1)), Headers(fields), reason=(m.group(2) or b"").decode("latin-1")
        )
        if response.status == 101:
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


# ---------------------------------------------------------------------------------------------
# Server side
# ---------------------------------------------------------------------------------------------


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2).

    Example:
        >>> accept_key("dGhlIHNhbXBsZSBub25jZQ==")
        's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
    """
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def _single(headers: Headers, name: str, *, required: bool = True) -> str | None:
    values = headers.get_all(name)
    if len(values) > 1:
        raise InvalidRequest(f"duplicate {name} header")
    if not values:
        if required:
            raise InvalidUpgrade(f"missing {name} header")
        return None
    return values[0]


def check_request(request: Request) -> str:
    """Validate a WebSocket upgrade request (RFC 6455 §4.2.1); return its ``Sec-WebSocket-Key``.

    Raises:
        InvalidHandshake: with the status to answer: 405 for a method other than GET, 426 without
            an ``Upgrade`` header or with a version other than 13, 400 for anything else.
    """
    headers = request.headers
    if request.method != "GET":
        raise InvalidRequest(
            f"method {request.method} not allowed: a WebSocket handshake is a GET",
            HTTPStatus.METHOD_NOT_ALLOWED,
            [("Allow", "GET")],
        )
    # Smuggling shapes: a GET upgrade has no body, so a framing header can only be an attack or
    # a confused intermediary. Refuse rather than guess where the body ends.
    if "Transfer-Encoding" in headers:
        raise InvalidRequest("Transfer-Encoding not allowed on an upgrade request")
    lengths = headers.get_all("Content-Length")
    if lengths and (len(lengths) > 1 or lengths[0] != "0"):
        raise InvalidRequest("request body not allowed on an upgrade request")
    host = _single(headers, "Host", required=False)
    if host is None:
        raise InvalidRequest("missing Host header")
    if not host or any(c in host for c in " \t/"):
        raise InvalidRequest("invalid Host header")
    upgrade = parse_token_list(headers.get_all("Upgrade"))
    if not upgrade:
        raise InvalidUpgrade(
            "this is a WebSocket endpoint: missing Upgrade: websocket header",
            HTTPStatus.UPGRADE_REQUIRED,
            [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
        )
    if "websocket" not in upgrade:
        raise InvalidUpgrade("Upgrade header does not name websocket")
    if "upgrade" not in parse_token_list(headers.get_all("Connection")):
        raise InvalidUpgrade("Connection header does not include Upgrade")
    versions = headers.get_all("Sec-WebSocket-Version")
    if len(versions) != 1 or versions[0].strip() != "13":
        raise UnsupportedVersion(
            "missing Sec-WebSocket-Version header"
            if not versions
            else "unsupported WebSocket version: only 13 is supported"
        )
    key = _single(headers, "Sec-WebSocket-Key")
    assert key is not None
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise InvalidUpgrade("invalid Sec-WebSocket-Key: must be 16 bytes in base64")
    _single(headers, "Origin", required=False)
    return key


def build_accept_response(
    key: str,
    *,
    subprotocol: str | None = None,
    extensions: str | None = None,
    extra_headers: HeadersLike | None = None,
) -> Response:
    """The ``101 Switching Protocols`` response that accepts an upgrade."""
    headers = Headers(
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(key)),
        ]
    )
    if subprotocol is not None:
        headers.add("Sec-WebSocket-Protocol", subprotocol)
    if extensions:
        headers.add("Sec-WebSocket-Extensions", extensions)
    for name, value in _to_headers(extra_headers).items():
        headers.add(name, value)
    return Response(101, headers)


# ---------------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------------


def generate_key() -> str:
    """A fresh random ``Sec-WebSocket-Key``."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def build_request(
    uri: str,
    key: str,
    *,
    origin: str | None = None,
    subprotocols: Iterable[str] = (),
    extensions: str | None = None,
    extra_headers: HeadersLike | None = None,
) -> Request:
    """The client's upgrade request for a ``ws://`` or ``wss://`` URI."""
    parts = urlsplit(uri)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != (443 if secure else 80):
        host = f"{host}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = Headers(
        [
            ("Host", host),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
        ]
    )
    if origin is not None:
        headers.add("Origin", origin)
    protocols = list(subprotocols)
    if protocols:
        headers.add("Sec-WebSocket-Protocol", ", ".join(protocols))
    if extensions:
        headers.add("Sec-WebSocket-Extensions", extensions)
    for name, value in _to_headers(extra_headers).items():
        headers.add(name, value)
    return Request("GET", target, headers)


def check_response(response: Response, key: str, subprotocols: Iterable[str] = ()) -> str | None:
    """Validate the server's 101 response (RFC 6455 §4.1); return the selected subprotocol.

    Raises:
        InvalidResponse: the response does not complete the handshake.
    """
    headers = response.headers
    if "websocket" not in parse_token_list(headers.get_all("Upgrade")):
        raise InvalidResponse("response has no Upgrade: websocket header")
    if "upgrade" not in parse_token_list(headers.get_all("Connection")):
        raise InvalidResponse("response has no Connection: Upgrade header")
    accepts = headers.get_all("Sec-WebSocket-Accept")
    if len(accepts) != 1 or accepts[0] != accept_key(key):
        raise InvalidResponse("invalid Sec-WebSocket-Accept")
    protocols = headers.get_all("Sec-WebSocket-Protocol")
    if not protocols:
        return None
    offered = list(subprotocols)
    if len(protocols) > 1 or "," in protocols[0] or protocols[0] not in offered:
        raise InvalidResponse(f"server selected a subprotocol not offered: {protocols[0]}")
    return protocols[0]
