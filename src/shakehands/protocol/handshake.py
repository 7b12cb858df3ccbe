"""The opening handshake of RFC 6455 §4: the WebSocket rules on top of HTTP/1.1.

This module owns what makes an HTTP exchange a WebSocket handshake: validating an upgrade
request (server side) and the server's answer (client side), and building both, with the
``Sec-WebSocket-Key`` / ``Sec-WebSocket-Accept`` computation. Every failure is an
:class:`InvalidHandshake` carrying the HTTP status to answer with. It performs no I/O and knows
nothing about frames. HTTP messages and their parsing are :mod:`.http11`'s; header grammar is
:mod:`.headers`'; both are re-exported here, where they were first defined.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable
from http import HTTPStatus
from urllib.parse import urlsplit

from .errors import (
    InvalidHandshake,
    InvalidRequest,
    InvalidResponse,
    InvalidUpgrade,
    UnsupportedVersion,
)
from .headers import Headers, HeadersLike, check_headers, parse_token_list, to_headers
from .http11 import (
    MAX_BODY,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_LINE,
    Request,
    RequestParser,
    Response,
    ResponseParser,
    error_response,
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
    "check_extended_connect",
    "build_accept_response",
    "build_request",
    "check_response",
    "error_response",
    "parse_token_list",
    "GUID",
    "MAX_BODY",
    "MAX_LINE",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "InvalidHandshake",
]

#: RFC 6455 §1.3.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# The start of every 101, up to the accept key (see build_accept_response).
_ACCEPT_HEAD = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: "
)
# The same headers, compacted (see Headers._compact), up to the accept key.
_ACCEPT_ITEMS = "Upgrade:websocket\nConnection:Upgrade\nSec-WebSocket-Accept:"


# ---------------------------------------------------------------------------------------------
# Server side
# ---------------------------------------------------------------------------------------------


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2).

    Example:
        >>> accept_key("dGhlIHNhbXBsZSBub25jZQ==")
        's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
    """
    return _accept_bytes(key).decode("ascii")


def _accept_bytes(key: str) -> bytes:
    """:func:`accept_key` as bytes, ready for the wire."""
    return binascii.b2a_base64(hashlib.sha1((key + GUID).encode("ascii")).digest(), newline=False)


def _single(headers: Headers, name: str, *, required: bool = True) -> str | None:
    values = headers.get_all(name)
    if len(values) > 1:
        raise InvalidRequest(f"duplicate {name} header")
    if not values:
        if required:
            raise InvalidUpgrade(f"missing {name} header")
        return None
    return values[0]


# A Sec-WebSocket-Key that base64-decodes to 16 bytes (with validate=True: nothing but the
# alphabet and its padding) is exactly 22 characters of the alphabet and "==".
_KEY_RE = re.compile(r"[A-Za-z0-9+/]{22}==")


def check_request(request: Request) -> str:
    """Validate a WebSocket upgrade request (RFC 6455 §4.2.1); return its ``Sec-WebSocket-Key``.

    Raises:
        InvalidHandshake: with the status to answer: 405 for a method other than GET, 426 without
            an ``Upgrade`` header or with a version other than 13, 400 for anything else.
    """
    if request.method != "GET":
        raise InvalidRequest(
            f"method {request.method} not allowed: a WebSocket handshake is a GET",
            HTTPStatus.METHOD_NOT_ALLOWED,
            [("Allow", "GET")],
        )
    # One pass: straight on the index of lower-cased names (the C parser hands it over; else
    # it is built once, here), with plain comparisons for the values every client sends.
    headers = request.headers
    get = (headers._index or headers._lookup()).get
    # Smuggling shapes: a GET upgrade has no body, so a framing header can only be an attack or
    # a confused intermediary. Refuse rather than guess where the body ends.
    if get("transfer-encoding"):
        raise InvalidRequest("Transfer-Encoding not allowed on an upgrade request")
    lengths = get("content-length")
    if lengths and (len(lengths) > 1 or lengths[0] != "0"):
        raise InvalidRequest("request body not allowed on an upgrade request")
    hosts = get("host")
    if not hosts:
        raise InvalidRequest("missing Host header")
    if len(hosts) > 1:
        raise InvalidRequest("duplicate Host header")
    host = hosts[0]
    if not host or " " in host or "\t" in host or "/" in host:
        raise InvalidRequest("invalid Host header")
    upgrades = get("upgrade")
    if upgrades != ["websocket"]:
        upgrade = parse_token_list(upgrades or [])
        if not upgrade:
            raise InvalidUpgrade(
                "this is a WebSocket endpoint: missing Upgrade: websocket header",
                HTTPStatus.UPGRADE_REQUIRED,
                [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
            )
        if "websocket" not in upgrade:
            raise InvalidUpgrade("Upgrade header does not name websocket")
    connections = get("connection")
    if connections != ["Upgrade"] and "upgrade" not in parse_token_list(connections or []):
        raise InvalidUpgrade("Connection header does not include Upgrade")
    versions = get("sec-websocket-version")
    if versions != ["13"] and (not versions or len(versions) != 1 or versions[0].strip() != "13"):
        raise UnsupportedVersion(
            "missing Sec-WebSocket-Version header"
            if not versions
            else "unsupported WebSocket version: only 13 is supported"
        )
    keys = get("sec-websocket-key")
    if not keys:
        raise InvalidUpgrade("missing Sec-WebSocket-Key header")
    if len(keys) > 1:
        raise InvalidRequest("duplicate Sec-WebSocket-Key header")
    key = keys[0]
    if _KEY_RE.fullmatch(key) is None:
        raise InvalidUpgrade("invalid Sec-WebSocket-Key: must be 16 bytes in base64")
    origins = get("origin")
    if origins and len(origins) > 1:
        raise InvalidRequest("duplicate Origin header")
    return key


def check_extended_connect(request: Request) -> None:
    """Validate a WebSocket request carried by an HTTP/2 extended CONNECT (RFC 8441 §4-5).

    The I/O layer maps the HTTP/2 request onto a :class:`Request` first: ``:method`` is the
    method, ``:path`` the target, ``:authority`` the ``Host`` header, and it has checked that
    ``:protocol`` is ``websocket`` (the stream's routing). What stays a WebSocket rule is
    checked here: there is no ``Sec-WebSocket-Key`` / ``Sec-WebSocket-Accept`` and no
    ``Upgrade`` / ``Connection`` header on HTTP/2, but version 13 is still required.

    Raises:
        InvalidHandshake: 405 for a method other than CONNECT, 426 (with
            ``Sec-WebSocket-Version: 13``) for a missing or other version, 400 otherwise.
    """
    headers = request.headers
    if request.method != "CONNECT":
        raise InvalidRequest(
            f"method {request.method} not allowed: a WebSocket over HTTP/2 is a CONNECT",
            HTTPStatus.METHOD_NOT_ALLOWED,
            [("Allow", "CONNECT")],
        )
    host = _single(headers, "Host", required=False)
    if not host or any(c in host for c in " \t/"):
        raise InvalidRequest("missing or invalid :authority")
    versions = headers.get_all("Sec-WebSocket-Version")
    if len(versions) != 1 or versions[0].strip() != "13":
        raise UnsupportedVersion(
            "missing sec-websocket-version header"
            if not versions
            else "unsupported WebSocket version: only 13 is supported"
        )
    _single(headers, "Origin", required=False)


def build_accept_response(
    key: str | None,
    *,
    subprotocol: str | None = None,
    extensions: str | None = None,
    extra_headers: HeadersLike | None = None,
) -> Response:
    """The response that accepts a handshake: ``101 Switching Protocols`` for the
    ``Sec-WebSocket-Key`` ``key``; with ``key=None``, the ``200`` that accepts an HTTP/2
    extended CONNECT (RFC 8441 §5: no key, no accept, no upgrade headers)."""
    if key is None:
        headers = Headers()
    else:
        accept = _accept_bytes(key)
        if extra_headers is None and not (
            (subprotocol is not None and "\n" in subprotocol) or (extensions and "\n" in extensions)
        ):
            # The usual 101: its bytes from a template, only the accept key and the negotiated
            # lines filled in (what Response.serialize would make of the same headers), and its
            # headers already compacted, as send_response leaves them (see Headers._compact).
            head = [_ACCEPT_HEAD, accept]
            items = _ACCEPT_ITEMS + accept.decode("ascii")
            if subprotocol is not None:
                head += (b"\r\nSec-WebSocket-Protocol: ", subprotocol.encode("latin-1"))
                items += "\nSec-WebSocket-Protocol:" + subprotocol
            if extensions:
                head += (b"\r\nSec-WebSocket-Extensions: ", extensions.encode("latin-1"))
                items += "\nSec-WebSocket-Extensions:" + extensions
            head.append(b"\r\n\r\n")
            response = Response._unchecked(101, Headers._packed(items), b"", "Switching Protocols")
            return response._with_head(b"".join(head))
        pairs = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept.decode("ascii")),
        ]
        headers = Headers(pairs)
    if subprotocol is not None:
        headers.add("Sec-WebSocket-Protocol", subprotocol)
    if extensions:
        headers.add("Sec-WebSocket-Extensions", extensions)
    if extra_headers is not None:
        for name, value in check_headers(extra_headers, "extra_headers").items():
            headers.add(name, value)
    # Our own headers, and checked extra ones: no second check of the whole.
    if key is None:
        return Response._unchecked(200, headers, b"", "OK")
    return Response._unchecked(101, headers, b"", "Switching Protocols")


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
    for name, value in to_headers(extra_headers).items():
        headers.add(name, value)
    return Request("GET", target, headers)


def check_response(
    response: Response, key: str | None, subprotocols: Iterable[str] = ()
) -> str | None:
    """Validate the server's 101 response (RFC 6455 §4.1); return the selected subprotocol.

    With ``key=None``, the ``200`` that accepts an HTTP/2 extended CONNECT (RFC 8441 §5): no
    ``Upgrade``, ``Connection`` or ``Sec-WebSocket-Accept`` to check, the subprotocol still.

    Raises:
        InvalidResponse: the response does not complete the handshake.
    """
    headers = response.headers
    if key is not None:
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
