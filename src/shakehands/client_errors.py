"""The client's connect errors that need :mod:`ssl`, kept out of the sans-I/O core (which never
imports ssl: see ``protocol/errors.py`` for the others) and shared by both clients."""

from __future__ import annotations

import ssl

from .protocol.errors import ShakehandsError

__all__ = ["TLSVerificationError", "tls_verification_error"]


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
