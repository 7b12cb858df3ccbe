"""The blocking API of an open connection: ``ws.recv()``, ``ws.send()``, ``for message in ws``.

Theory of operation. Each :class:`Connection` owns a socket, a sans-I/O connection of
:mod:`shakehands.protocol`, and one background thread, the *reader*: it waits for bytes, feeds them
to the core, writes what the core queued (pongs, close frames), puts the messages in a bounded
inbox, and runs the timers the core cannot have (keepalive pings, the closing-handshake timeout).
Application threads take messages from the inbox (:meth:`Connection.recv`) and send through the
core (:meth:`Connection.send`). Two rules:

1. Every use of the core and every socket write happens under one lock, so frames leave in the
   order the core queued them, whichever thread queued them.
2. When the peer's close frame follows messages that the application has not read yet, our close
   frame waits until the application asks for a message that is not there (or closes, or
   ``close_timeout`` passes): its answers to those messages leave first, as in the asyncio layer.

The inbox is bounded (``max_queue``): when it is full the reader stops reading from the socket,
so a peer that sends faster than the application reads is slowed down by TCP, not buffered.
This module knows nothing about handshakes (see :mod:`.server` and :mod:`.client`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import ssl as ssl_module
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from ..protocol.connection import Connection as Protocol
from ..protocol.connection import Pong, State
from ..protocol.errors import CloseCode, ConnectionClosedOK
from ..protocol.handshake import Request, Response

__all__ = ["Connection", "Data", "PongWaiter"]

logger = logging.getLogger("shakehands.sync")

#: A message: ``str`` for text, ``bytes`` for binary.
Data = str | bytes

_BytesLike = (bytes, bytearray, memoryview)
_READ_SIZE = 2**16


class PongWaiter:
    """What :meth:`Connection.ping` returns: wait for the pong with :meth:`wait`."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._event = threading.Event()
        self._sent = time.monotonic()
        self._latency: float | None = None

    def _set(self, now: float | None) -> None:
        if now is not None:
            self._latency = now - self._sent
        self._event.set()

    def wait(self, timeout: float | None = None) -> float:
        """Block until the pong arrives; return the round-trip time in seconds.

        Raises:
            TimeoutError: no pong within ``timeout`` seconds.
            ConnectionClosed: the connection closed before the pong came.
        """
        if not self._event.wait(timeout):
            raise TimeoutError("no pong received in time")
        if self._latency is None:
            raise self._connection.protocol.close_exception()
        return self._latency


class Connection:
    """An open WebSocket connection, used from threads.

    Receive with :meth:`recv` or ``for message in ws``; send with :meth:`send`; end with
    :meth:`close` (or a ``with`` block). After the connection closes, :meth:`recv` and
    :meth:`send` raise :class:`~shakehands.ConnectionClosedOK` or
    :class:`~shakehands.ConnectionClosedError`. The subclasses
    :class:`~shakehands.sync.ServerConnection` and :class:`~shakehands.sync.ClientConnection`
    add the opening handshake's :attr:`request`, :attr:`response` and :attr:`subprotocol`.
    """

    def __init__(
        self,
        sock: socket.socket,
        protocol: Protocol,
        *,
        max_queue: int = 32,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float | None = 10.0,
    ) -> None:
        self.socket = sock
        self.protocol = protocol
        self.max_queue = max(1, max_queue)
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        #: The opening handshake's request (server: the client's; client: ours).
        self.request: Request | None = None
        #: The opening handshake's response.
        self.response: Response | None = None
        #: The subprotocol agreed on, or ``None``.
        self.subprotocol: str | None = None

        self._lock = threading.Lock()  # rule 1: the core and socket writes
        self._inbox: deque[Data] = deque()
        self._inbox_cond = threading.Condition(threading.Lock())
        self._receivers_waiting = 0
        self._reader_done = threading.Event()
        self._holding_close = False
        self._close_called = False
        self._write_shut = False
        self._pings: dict[bytes, PongWaiter] = {}
        self._keepalive_payload: bytes | None = None
        self._keepalive_deadline: float | None = None
        self._next_keepalive: float | None = None
        self._close_deadline: float | None = None
        try:
            self.remote_address: Any = sock.getpeername()
            self.local_address: Any = sock.getsockname()
        except OSError:
            self.remote_address = self.local_address = None
        sock.settimeout(None)
        self._reader = threading.Thread(
            target=self._read_loop, name=f"shakehands-reader-{self.remote_address}", daemon=True
        )

    def _start(self) -> None:
        """Start the reader thread (called once the handshake is done)."""
        if self.ping_interval is not None:
            self._next_keepalive = time.monotonic() + self.ping_interval
        self._reader.start()

    # -----------------------------------------------------------------------------------------
    # Receiving
    # -----------------------------------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> Data:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        Args:
            timeout: seconds to wait at most (``None``: as long as it takes; ``0``: only a
                message already received).

        Raises:
            TimeoutError: no message within ``timeout``.
            ConnectionClosedOK: the connection closed cleanly (and no message is left).
            ConnectionClosedError: it closed with an error, or without a closing handshake.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._inbox_cond:
            self._receivers_waiting += 1
            try:
                while not self._inbox:
                    if self._reader_done.is_set():
                        raise self.protocol.close_exception()
                    # Rule 2: asking for a message that is not there releases our close frame.
                    self._inbox_cond.notify_all()
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError("no message received in time")
                    self._inbox_cond.wait(remaining)
                message = self._inbox.popleft()
                self._inbox_cond.notify_all()  # room in the inbox for the reader
                return message
            finally:
                self._receivers_waiting -= 1

    def __iter__(self) -> Iterator[Data]:
        """Yield messages until the connection closes; a clean close ends the loop quietly."""
        try:
            while True:
                yield self.recv()
        except ConnectionClosedOK:
            return

    # -----------------------------------------------------------------------------------------
    # Sending
    # -----------------------------------------------------------------------------------------

    def send(
        self,
        message: Data | bytearray | memoryview | Iterable[Data],
        *,
        compress: bool = True,
    ) -> None:
        """Send a message: ``str`` as text, bytes-like as binary.

        An iterable of ``str`` (or of bytes) is sent as one fragmented message, a frame per item.
        With permessage-deflate negotiated, ``compress=False`` sends this message uncompressed.
        Blocks while the socket's send buffer is full.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            TypeError: ``message`` is of no supported type.
        """
        if isinstance(message, str | bytes | bytearray | memoryview):
            with self._lock:
                self._check_open()
                self.protocol.send_message(message, compress=compress)
                self._flush()
            return
        if not isinstance(message, Iterable):
            raise TypeError(f"cannot send {type(message).__name__}")
        iterator = iter(message)
        try:
            previous = next(iterator)
        except StopIteration:
            return
        started = False
        try:
            for fragment in iterator:
                self._send_fragment(previous, fin=False, compress=compress)
                started = True
                previous = fragment
            self._send_fragment(previous, fin=True, compress=compress)
        except BaseException:
            if started:
                # Part of a message is out and the rest will never follow: fail with 1011.
                self._fail(CloseCode.INTERNAL_ERROR, "error in fragmented message")
            raise

    def _send_fragment(self, fragment: object, *, fin: bool, compress: bool) -> None:
        if not isinstance(fragment, str | bytes | bytearray | memoryview):
            raise TypeError(f"cannot send a fragment of type {type(fragment).__name__}")
        with self._lock:
            self._check_open()
            self.protocol.send_fragment(fragment, fin=fin, compress=compress)
            self._flush()

    def ping(self, data: bytes | None = None) -> PongWaiter:
        """Send a ping; ``ping().wait(timeout)`` blocks for the pong and returns the latency.

        ``data`` (at most 125 bytes) defaults to 4 random bytes.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            ValueError: a ping with this payload is already waiting for its pong.
        """
        with self._lock:
            self._check_open()
            if data is None:
                data = os.urandom(4)
                while data in self._pings:
                    data = os.urandom(4)
            elif data in self._pings:
                raise ValueError("a ping with this payload is already waiting for its pong")
            waiter = PongWaiter(self)
            self.protocol.send_ping(data)
            self._pings[data] = waiter
            self._flush()
        return waiter

    def _check_open(self) -> None:
        if self.protocol.state is not State.OPEN:
            raise self.protocol.close_exception()

    def _flush(self) -> None:
        """Write what the core queued (call with the lock held)."""
        out = self.protocol.data_to_send(send_close=not self._holding_close)
        if out and not self._write_shut:
            try:
                self.socket.sendall(out[0] if len(out) == 1 else b"".join(out))
            except OSError:
                # The peer is gone; the reader sees it too and ends the connection.
                self._write_shut = True
                self._shutdown_socket(socket.SHUT_RDWR)
        if self.protocol.state is State.CLOSED:
            self._closing_handshake_done()

    def _shutdown_socket(self, how: int) -> None:
        with contextlib.suppress(OSError):
            self.socket.shutdown(how)

    def _closing_handshake_done(self) -> None:
        """The core is CLOSED: the server half-closes now, and both wait for the peer's EOF."""
        if self._close_deadline is None:
            self._close_deadline = time.monotonic() + (
                self.close_timeout if self.close_timeout is not None else 10.0
            )
        if self.protocol.close_expected() and not self._write_shut:
            # RFC 6455 §7.1.1: the server closes TCP first. A half-close, so that the peer
            # reads our last bytes before its EOF ends the connection (no RST on unread data).
            self._write_shut = True
            if isinstance(self.socket, ssl_module.SSLSocket):
                self._shutdown_socket(socket.SHUT_RDWR)
            else:
                self._shutdown_socket(socket.SHUT_WR)

    def _fail(self, code: int, reason: str) -> None:
        with self._lock:
            if self.protocol.state is State.OPEN:
                self.protocol.fail(code, reason)
            self._flush()

    # -----------------------------------------------------------------------------------------
    # Closing
    # -----------------------------------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Run the closing handshake and wait until the TCP connection is closed.

        Waits at most ``close_timeout`` for the peer, then drops the connection. Calling it on a
        closed connection does nothing.
        """
        with self._lock:
            self._close_called = True
            if self.protocol.state is State.OPEN:
                self.protocol.send_close(code, reason)
                self._close_deadline = time.monotonic() + (
                    self.close_timeout if self.close_timeout is not None else 10.0
                )
            self._holding_close = False
            self._flush()
        with self._inbox_cond:
            self._inbox_cond.notify_all()
        self.wait_closed(None if self.close_timeout is None else self.close_timeout + 1.0)
        if not self._reader_done.is_set():
            self._shutdown_socket(socket.SHUT_RDWR)
            self.wait_closed()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the TCP connection is closed; return whether it is."""
        if not self._reader.is_alive() and not self._reader_done.is_set():
            return False  # never started
        return self._reader_done.wait(timeout)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -----------------------------------------------------------------------------------------
    # Introspection
    # -----------------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The connection's state."""
        return self.protocol.state

    @property
    def open(self) -> bool:
        """Whether messages can be sent."""
        return self.protocol.state is State.OPEN

    @property
    def close_code(self) -> int | None:
        """The peer's close code once closed (1006 without a close frame), else ``None``."""
        if not self._reader_done.is_set() and self.protocol.state is not State.CLOSED:
            return None
        return self.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        """The peer's close reason once closed, else ``None``."""
        if not self._reader_done.is_set() and self.protocol.state is not State.CLOSED:
            return None
        return self.protocol.close_reason

    # -----------------------------------------------------------------------------------------
    # The reader thread
    # -----------------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            # Frames that came with the handshake were parsed already.
            with self._lock:
                events = self.protocol.events_received()
                self._flush()
            self._dispatch(events)
            while True:
                if not self._wait_readable():
                    if self._on_timer():
                        break
                    continue
                try:
                    data = self.socket.recv(_READ_SIZE)
                except (OSError, ValueError):
                    data = b""
                with self._lock:
                    if data:
                        self.protocol.receive_data(data)
                    else:
                        self.protocol.receive_eof()
                    events = self.protocol.events_received()
                    if self.protocol.close_pending and (
                        self._inbox or any(type(e) is str or type(e) is bytes for e in events)
                    ):
                        self._holding_close = True
                    self._flush()
                self._dispatch(events)
                if self._holding_close:
                    self._release_close()
                if not data:
                    break
        except Exception:
            logger.exception("reader thread failed")
        finally:
            with self._lock:
                if self.protocol.state is not State.CLOSED:
                    self.protocol.receive_eof()
                self.protocol.events_received()
            with contextlib.suppress(OSError):
                self.socket.close()
            self._reader_done.set()
            for waiter in self._pings.values():
                waiter._set(None)
            self._pings.clear()
            with self._inbox_cond:
                self._inbox_cond.notify_all()

    def _next_timer(self) -> float | None:
        timers = [
            t
            for t in (self._close_deadline, self._keepalive_deadline, self._next_keepalive)
            if t is not None
        ]
        return min(timers) if timers else None

    def _wait_readable(self) -> bool:
        """Wait for bytes (or EOF) until the next timer; ``False`` when the timer is due."""
        sock = self.socket
        if isinstance(sock, ssl_module.SSLSocket) and sock.pending():
            return True
        when = self._next_timer()
        timeout = None if when is None else max(0.0, when - time.monotonic())
        try:
            readable, _, _ = select.select([sock], [], [], timeout)
        except (OSError, ValueError):
            return True  # the socket was closed under us: recv says so
        return bool(readable)

    def _on_timer(self) -> bool:
        """Run the timers that are due; ``True`` ends the reader (the peer is unresponsive)."""
        now = time.monotonic()
        if self._close_deadline is not None and now >= self._close_deadline:
            logger.info("closing handshake timed out; dropping the connection")
            return True
        if self._keepalive_deadline is not None and now >= self._keepalive_deadline:
            logger.info("keepalive ping timeout; closing the connection")
            self._keepalive_deadline = None
            self._next_keepalive = None
            self._fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            with self._lock:
                if self._close_deadline is None:
                    self._closing_handshake_done()
            return False
        if self._next_keepalive is not None and now >= self._next_keepalive:
            assert self.ping_interval is not None
            self._next_keepalive = now + self.ping_interval
            with self._lock:
                if self.protocol.state is State.OPEN and self._keepalive_payload is None:
                    self._keepalive_payload = os.urandom(4)
                    self.protocol.send_ping(self._keepalive_payload)
                    self._flush()
                    if self.ping_timeout is not None:
                        self._keepalive_deadline = now + self.ping_timeout
        return False

    def _dispatch(self, events: list[object]) -> None:
        for event in events:
            kind = type(event)
            if kind is str or kind is bytes:
                with self._inbox_cond:
                    while len(self._inbox) >= self.max_queue and not self._close_called:
                        self._inbox_cond.wait()
                    self._inbox.append(event)  # type: ignore[arg-type]
                    self._inbox_cond.notify_all()
            elif kind is Pong:
                self._on_pong(event.data)  # type: ignore[attr-defined]

    def _on_pong(self, data: bytes) -> None:
        if data == self._keepalive_payload:
            self._keepalive_payload = None
            self._keepalive_deadline = None
        with self._lock:
            if data not in self._pings:
                return
            # A pong answers its ping and every earlier one (RFC 6455 §5.5.3).
            now = time.monotonic()
            for payload in list(self._pings):
                self._pings.pop(payload)._set(now)
                if payload == data:
                    break

    def _release_close(self) -> None:
        """Rule 2: send our close frame once the application has read what came before it."""
        deadline = time.monotonic() + (self.close_timeout or 10.0)
        with self._inbox_cond:
            while not self._close_called and (self._inbox or not self._receivers_waiting):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._inbox_cond.wait(remaining)
        with self._lock:
            self._holding_close = False
            self._flush()
