"""HTTP Basic authentication (RFC 7617) for servers: a ``process_request`` hook.

This module owns reading the ``Authorization: Basic ...`` header of an upgrade request,
checking the credentials in constant time, and the ``401 Unauthorized`` answer with its
``WWW-Authenticate`` challenge. It performs no I/O and knows no server: the hook it builds
works with ``serve``, ``serve_callbacks`` and ``sync.serve`` alike (an asynchronous ``check``
only with the asyncio servers, which await what the hook returns).

Browsers cannot set headers on a WebSocket request, but they send the credentials of a page
they logged into with Basic auth, or those of a ``wss://user:pass@host/`` URI; other clients
send the header themselves. Use it over TLS only: Basic credentials are not encrypted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any

from .protocol.handshake import Request, Response

__all__ = ["basic_auth", "USER_KEY", "parse_basic_credentials"]

#: The key of ``request.context`` (``ws.context``) that holds the authenticated user name.
USER_KEY = "user"

#: ``check(username, password)``: whether to let them in (or an awaitable of it).
Check = Callable[[str, str], "bool | Awaitable[bool]"]

_REALM_RE = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]+")  # printable ASCII, no '"' or '\'


def parse_basic_credentials(request: Request) -> tuple[str, str] | str:
    """The ``(username, password)`` of a request's ``Authorization: Basic`` header, or, when
    there is none or it is malformed, a ``str`` saying what is wrong.

    Example:
        >>> from shakehands import Headers
        >>> parse_basic_credentials(Request("GET", "/", Headers(
        ...     [("Authorization", "Basic YWxpY2U6czNjcjN0")])))
        ('alice', 's3cr3t')
        >>> parse_basic_credentials(Request("GET", "/", Headers()))
        'missing credentials'
    """
    values = request.headers.get_all("Authorization")
    if not values:
        return "missing credentials"
    if len(values) > 1:
        return "more than one Authorization header"
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "basic":
        return "expected Basic credentials"
    token = token.strip()
    try:
        decoded = base64.b64decode(token.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return "malformed Basic credentials: not base64"
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return "malformed Basic credentials: not UTF-8"
    username, colon, password = text.partition(":")
    if not colon:
        return "malformed Basic credentials: no ':' between user and password"
    return username, password


def _digest(text: str) -> bytes:
    # Hashing first makes the comparison's time independent of the lengths too.
    return hashlib.sha256(text.encode("utf-8")).digest()


def basic_auth(
    realm: str = "shakehands",
    *,
    credentials: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    check: Check | None = None,
    process_request: Callable[[Request], Any] | None = None,
) -> Callable[[Request], Any]:
    """A ``process_request`` hook that lets in only requests with valid Basic credentials.

    Args:
        realm: named in the challenge (printable ASCII, no ``"`` or ``\\``).
        credentials: ``{"user": "password"}`` (or ``(user, password)`` pairs); passwords are
            compared in constant time (``hmac.compare_digest`` of their SHA-256).
        check: instead of ``credentials``, ``check(username, password)`` returns whether to
            let them in; it may be ``async`` with the asyncio servers.
        process_request: your own hook, run after a successful authentication (it sees
            ``request.context["user"]``); what it returns is the answer.

    Returns:
        The hook. A request without valid credentials is answered ``401 Unauthorized`` with
        ``WWW-Authenticate: Basic realm="<realm>", charset="UTF-8"`` and a short plain-text
        reason (missing, malformed, or invalid credentials; which user names exist is never
        said). The user name is put in ``request.context["user"]``: ``ws.context["user"]`` in
        the handler.

    Raises:
        TypeError: neither or both of ``credentials`` and ``check``.
        ValueError: a bad realm, or a user name containing ``:`` (RFC 7617 forbids it).

    Example::

        serve(handler, "127.0.0.1", 8765,
              process_request=basic_auth("chat", credentials={"alice": "s3cr3t"}))
    """
    if (credentials is None) == (check is None):
        raise TypeError("basic_auth needs credentials or check: exactly one of them")
    if not isinstance(realm, str) or not _REALM_RE.fullmatch(realm):
        raise ValueError(f"realm must be printable ASCII without '\"' or '\\\\', got {realm!r}")
    if check is not None and not callable(check):
        raise TypeError(f"check must be callable, got {check!r}")
    if process_request is not None and not callable(process_request):
        raise TypeError(f"process_request must be callable, got {process_request!r}")
    known: dict[str, bytes] = {}
    if credentials is not None:
        pairs = credentials.items() if isinstance(credentials, Mapping) else credentials
        for username, password in pairs:
            if not isinstance(username, str) or not isinstance(password, str):
                raise TypeError("credentials are str user names and str passwords")
            if ":" in username:
                raise ValueError(f"user name {username!r} contains ':' (RFC 7617)")
            known[username] = _digest(password)
    dummy = _digest("\0no such user\0")
    challenge = f'Basic realm="{realm}", charset="UTF-8"'

    def refuse(reason: str) -> Response:
        return Response(HTTPStatus.UNAUTHORIZED, {"WWW-Authenticate": challenge}, f"{reason}\n")

    def accept(request: Request, username: str) -> Any:
        request.context[USER_KEY] = username
        return None if process_request is None else process_request(request)

    async def finish(request: Request, username: str, verdict: Awaitable[bool]) -> Any:
        if not await verdict:
            return refuse("invalid credentials")
        answer = accept(request, username)
        return await answer if inspect.isawaitable(answer) else answer

    def authenticate(request: Request) -> Any:
        parsed = parse_basic_credentials(request)
        if isinstance(parsed, str):
            return refuse(parsed)
        username, password = parsed
        if check is None:
            expected = known.get(username)
            # Compare even for an unknown user, so that the time says nothing about names.
            valid = hmac.compare_digest(_digest(password), expected or dummy)
            if not valid or expected is None:
                return refuse("invalid credentials")
            return accept(request, username)
        verdict = check(username, password)
        if inspect.isawaitable(verdict):
            return finish(request, username, verdict)
        if not verdict:
            return refuse("invalid credentials")
        return accept(request, username)

    return authenticate
