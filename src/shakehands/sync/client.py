"""The blocking client: ``with connect("ws://127.0.0.1:12345/") as ws: print(ws.recv())``.

:func:`connect` opens the TCP (and TLS) connection, sends the request built by the sans-I/O
:class:`~shakehands.protocol.client.ClientProtocol`, reads the server's answer within
``open_timeout``, and returns a :class:`ClientConnection` with the blocking API.
"""

from __future__ import annotations

import socket
import ssl as ssl_module
import time
from typing import Unpack

from ..protocol.client import NOT_TLS_REASONS, ClientProtocol, parse_uri, wrong_scheme
from ..protocol.config import ClientOptions, client_config
from ..protocol.errors import InvalidHandshake, InvalidResponse
from .connection import Connection

__all__ = ["connect", "ClientConnection"]


class ClientConnection(Connection):
    """A client connection of the blocking API (what :func:`connect` returns)."""

    protocol: ClientProtocol

    def __enter__(self) -> ClientConnection:
        return self


#: Seconds at most for the TLS probe of a ws:// server that closed without a word.
_PROBE_TIMEOUT = 2.0


def _speaks_tls(host: str, port: int) -> bool:
    """Whether ``host:port`` completes a TLS handshake (its certificate unchecked: nothing is
    sent over the connection, which is closed at once)."""
    context = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl_module.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), _PROBE_TIMEOUT) as sock,
            context.wrap_socket(sock),
        ):
            return True
    except OSError:
        return False


def connect(
    uri: str,
    *,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    **options: Unpack[ClientOptions],
) -> ClientConnection:
    """Open a WebSocket connection to ``uri`` and return it once the handshake is done.

    Args:
        uri: ``ws://host[:port]/path`` or ``wss://...``.
        origin: an ``Origin`` header to send.
        subprotocols: subprotocols to offer, in order of preference.
        extra_headers: more request headers.
        open_timeout: seconds for TCP, TLS and the handshake together.
        ssl: an ``ssl.SSLContext`` for ``wss://`` (default: the system's trust store).
        server_hostname: the name to check the server's certificate against (default: the
            URI's host).
        max_message_size, max_frame_size, max_queue, ping_interval, ping_timeout,
        close_timeout, write_limit, compression: as for :func:`~shakehands.sync.serve`;
            every option is defined in :class:`~shakehands.protocol.config.ClientConfig`.

    Raises:
        InvalidURI: the URI is not ws:// or wss://.
        InvalidHandshake: the server refused the upgrade (:class:`~shakehands.InvalidStatus`
            carries its response) or answered wrongly; :class:`~shakehands.InvalidResponse`
            also for a ws:// URI of a TLS server or a wss:// URI of a plain one (the message
            names the scheme to use).
        OSError, TimeoutError: the connection could not be made in time.

    Example::

        from shakehands.sync import connect

        with connect("ws://127.0.0.1:12345/") as ws:
            print(ws.recv())
    """
    config = client_config(**options)
    open_timeout = config.open_timeout
    wsuri = parse_uri(uri)
    if wsuri.secure and ssl is None:
        ssl = ssl_module.create_default_context()
    elif not wsuri.secure and ssl is not None:
        raise ValueError("an ssl context needs a wss:// URI")
    protocol = ClientProtocol(uri, config)
    deadline = None if open_timeout is None else time.monotonic() + open_timeout

    def remaining() -> float | None:
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"opening handshake with {uri} timed out")
        return left

    sock: socket.socket = socket.create_connection((wsuri.host, wsuri.port), remaining())
    try:
        if ssl is not None:
            sock.settimeout(remaining())
            sock = ssl.wrap_socket(sock, server_hostname=server_hostname or wsuri.host)
        protocol.send_request()
        sock.settimeout(remaining())
        sock.sendall(b"".join(protocol.data_to_send()))
        while protocol.response is None and protocol.handshake_exc is None:
            sock.settimeout(remaining())
            data = sock.recv(2**16)
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        if protocol.response is None:  # pragma: no cover - the core sets one or the other
            raise InvalidResponse("no response from the server")
    except TimeoutError:
        sock.close()
        raise TimeoutError(f"opening handshake with {uri} timed out") from None
    except BaseException as exc:
        sock.close()
        if isinstance(exc, ssl_module.SSLError) and exc.reason in NOT_TLS_REASONS:
            raise wrong_scheme(wsuri, server_speaks_tls=False) from exc
        if (
            isinstance(exc, (InvalidHandshake, OSError))
            and not wsuri.secure
            and protocol.nothing_received
            and _speaks_tls(wsuri.host, wsuri.port)
        ):
            raise wrong_scheme(wsuri, server_speaks_tls=True) from exc
        raise
    connection = ClientConnection(sock, protocol, config)
    connection.request = protocol.request
    connection.response = protocol.response
    connection.subprotocol = protocol.subprotocol
    connection._start()
    return connection
