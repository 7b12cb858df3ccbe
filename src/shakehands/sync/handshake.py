"""The blocking server's opening handshake, in three steps: read the request, answer it, start
the connection.

Twin of :mod:`shakehands.asyncio.handshake`. :func:`server_handshake` runs the whole handshake on
an accepted socket (TLS included) for :class:`~.server.Server`; :func:`read_request` and
:func:`answer_request` are its two halves, for code that accepts its own sockets and looks at the
request in between (the seed's ``getRequest`` / ``putResponse``: see :mod:`.seed`). What to
answer is decided by the sans-I/O :class:`~shakehands.protocol.server.ServerProtocol`; this
module only moves bytes, within ``open_timeout``.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING, Any

from ..protocol.errors import InvalidRequest
from ..protocol.handshake import Request, Response
from ..protocol.server import ServerProtocol

if TYPE_CHECKING:
    from .server import ServerConnection, ServerOptions

__all__ = ["server_handshake", "read_request", "answer_request", "REFUSAL_LINGER_BYTES"]

logger = logging.getLogger("shakehands.sync.server")

_READ_SIZE = 2**16
#: After a refused handshake, bytes read and discarded at most while waiting for the peer's EOF.
REFUSAL_LINGER_BYTES = 2**20


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _set_timeout(sock: socket.socket, deadline: float | None) -> None:
    if deadline is None:
        sock.settimeout(None)
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("opening handshake timed out")
    sock.settimeout(remaining)


def _write(sock: socket.socket, protocol: ServerProtocol) -> None:
    out = protocol.data_to_send()
    if out:
        sock.sendall(b"".join(out))


def _end_refused(sock: socket.socket, close_limit: float) -> None:
    """After an error response: a lingering close.

    Half-close, then read and discard until the peer's EOF, for at most ``close_limit`` seconds
    (the config's :attr:`~shakehands.protocol.config.Config.close_limit`) and
    :data:`REFUSAL_LINGER_BYTES`, then close. Closing at once, with bytes of a
    peer that is still sending unread, would reset the connection, and a reset destroys the
    answer before the peer reads it.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + close_limit
        left = REFUSAL_LINGER_BYTES
        while left > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            data = sock.recv(min(_READ_SIZE, left))
            if not data:
                break
            left -= len(data)
    except (OSError, ValueError):
        pass
    finally:
        sock.close()


def read_request(
    sock: socket.socket,
    protocol: ServerProtocol,
    *,
    deadline: float | None = None,
) -> Request:
    """Read the opening request from ``sock`` into ``protocol`` (the seed's ``getRequest``).

    Raises:
        InvalidHandshake: the request is malformed or too large; the socket has been answered
            (400 / 431) and closed (after a lingering close of at most ``close_timeout``).
        TimeoutError: ``deadline`` (a ``time.monotonic()`` value) passed; the socket is closed.
    """
    try:
        while protocol.request is None and protocol.handshake_exc is None:
            _set_timeout(sock, deadline)
            data = sock.recv(_READ_SIZE)
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
    except TimeoutError:
        sock.close()
        raise TimeoutError("opening handshake timed out") from None
    except OSError as exc:
        sock.close()
        raise InvalidRequest(f"connection lost during the handshake: {exc}") from None
    if protocol.handshake_exc is not None:
        try:
            _set_timeout(sock, deadline)
            _write(sock, protocol)
        except OSError:
            pass
        _end_refused(sock, protocol.config.close_limit)
        raise protocol.handshake_exc
    assert protocol.request is not None
    protocol.request.remote_address = _peer(sock)
    return protocol.request


def _peer(sock: socket.socket) -> Any:
    try:
        return sock.getpeername()
    except OSError:
        return None


def answer_request(
    sock: socket.socket,
    protocol: ServerProtocol,
    response: Response | None = None,
    *,
    deadline: float | None = None,
) -> ServerConnection | None:
    """Answer the request read by :func:`read_request` (the seed's ``putResponse``).

    ``response`` ``None`` validates the request and upgrades (a 101), or answers the error it
    deserves; any other :class:`Response` is sent as is. Returns the open connection after a
    101, with the options of ``protocol.config``; ``None`` after another response (the socket
    is then closed).

    Raises:
        InvalidHandshake: the request could not be upgraded; it was answered with
            :attr:`~shakehands.InvalidHandshake.status` and the socket closed.
    """
    upgrade = response is None
    config = protocol.config
    # The core decides: a 101, the 4xx the request deserves, the given answer, or a 500.
    response = protocol.answer(response)
    try:
        _set_timeout(sock, deadline)
        _write(sock, protocol)
    except OSError:
        sock.close()
        if response.status == 101:
            raise InvalidRequest("connection lost during the handshake") from None
        return None
    if response.status != 101:
        exc = protocol.handshake_exc
        if response.status >= 400 and exc is not None:
            logger.info("refused %s: %d %s", _peer(sock), response.status, exc.reason)
        _end_refused(sock, config.close_limit)
        if upgrade and exc is not None:
            raise exc
        return None
    from .server import ServerConnection  # (it imports this module)

    connection = ServerConnection(sock, protocol, config)
    if not protocol.can_ping:
        connection.ping_interval = None  # draft-76: no keepalive
    connection.request = protocol.request
    connection.response = protocol.response
    connection.subprotocol = protocol.subprotocol
    connection._start()
    return connection


def server_handshake(
    sock: socket.socket, options: ServerOptions, *, busy: bool = False
) -> ServerConnection | None:
    """Run the whole opening handshake on an accepted socket (TLS included).

    Returns the open connection, or ``None`` when ``process_request`` answered with its own
    response. Raises :class:`InvalidHandshake` (after answering it) or ``TimeoutError``.
    """
    config = options.config
    deadline = _deadline(config.open_timeout)
    if options.ssl is not None:
        try:
            _set_timeout(sock, deadline)
            sock = options.ssl.wrap_socket(sock, server_side=True)
        except (OSError, TimeoutError):
            sock.close()
            raise
    protocol = options.new_protocol()
    request = read_request(sock, protocol, deadline=deadline)
    response: Response | None = None
    if busy:
        logger.info("server full (max_connections); refusing %s with 503", _peer(sock))
        response = protocol.reject_busy()
    elif config.process_request is not None:
        try:
            response = config.process_request(request)  # type: ignore[assignment]
        except Exception:
            logger.exception("process_request failed")
            response = protocol.internal_error()
        if response is not None and not isinstance(response, Response):
            logger.error("process_request returned %r, not a Response or None", response)
    return answer_request(sock, protocol, response, deadline=deadline)
