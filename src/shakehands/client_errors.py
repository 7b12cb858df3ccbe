"""The client's connect errors, shared by both clients (asyncio and sync): those that need
:mod:`ssl`, kept out of the sans-I/O core (which never imports ssl: see ``protocol/errors.py``
for the others), and which error a failed connect raises."""

from __future__ import annotations

import ssl
from typing import NoReturn

from .protocol.client import NOT_TLS_REASONS, WebSocketURI, wrong_scheme
from .protocol.errors import ConnectionRefused, HostNotFound, ShakehandsError

__all__ = [
    "TLSVerificationError",
    "tls_verification_error",
    "tls_error",
    "refused",
    "raise_unreachable",
]


class TLSVerificationError(ShakehandsError, ssl.SSLCertVerificationError):
    """Client side: the server's TLS certificate was rejected; :attr:`verify_message` says why
    (``certificate has expired``, ``Hostname mismatch``, ``self-signed certificate``, ...).

    A subclass of :class:`ssl.SSLCertVerificationError` (hence of ``OSError``), so that existing
    ``except`` clauses keep working.
    """

    verify_code: int
    verify_message: str

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def tls_verification_error(exc: ssl.SSLCertVerificationError, host: str) -> TLSVerificationError:
    """The :class:`TLSVerificationError` for ``exc``, raised while connecting to ``host``."""
    reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
    error = TLSVerificationError(f"TLS certificate of {host} rejected: {reason}")
    error.verify_code = getattr(exc, "verify_code", 0)
    error.verify_message = reason
    error.reason = exc.reason
    error.library = exc.library
    return error


def tls_error(exc: ssl.SSLError, wsuri: WebSocketURI, host: str) -> Exception | None:
    """What a client raises instead of ``exc``, a TLS handshake's failure with the server of
    ``wsuri`` (its certificate checked against ``host``): a :class:`TLSVerificationError` for a
    rejected certificate, :func:`~shakehands.protocol.client.wrong_scheme`'s error for a server
    that does not speak TLS; ``None``: ``exc`` itself."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return tls_verification_error(exc, host)
    if exc.reason in NOT_TLS_REASONS:
        return wrong_scheme(wsuri, server_speaks_tls=False)
    return None


def refused(where: str) -> ConnectionRefused:
    """The error for a connection to ``where`` (``host:port``, a Unix socket's path) refused."""
    return ConnectionRefused(f"{where} refused the connection (is the server running?)")


def raise_unreachable(host: str, port: int, errors: list[OSError]) -> NoReturn:
    """Raise what a client's TCP connect raises when no address of ``host`` took the
    connection (``errors``: each address's, in order): :class:`ConnectionRefused` when every
    one refused, else the last error."""
    if errors and all(isinstance(exc, ConnectionRefusedError) for exc in errors):
        raise refused(f"{host}:{port}") from errors[-1]
    if errors:
        raise errors[-1]
    raise HostNotFound(f"{host!r} resolved to no address")  # pragma: no cover
