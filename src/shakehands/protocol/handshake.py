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
