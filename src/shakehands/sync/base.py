"""Socket plumbing under the blocking API: the reader thread, the outgoing buffer, the timers.

Twin of :mod:`shakehands.asyncio.base` (what an asyncio transport and event loop do for that
layer, a socket and a thread do here). The API on top is :mod:`.connection`; the inbox of
received messages is :mod:`.messages`.

Theory of operation. Each :class:`~.connection.Connection` owns a socket (non-blocking once the
handshake is done), a sans-I/O connection of :mod:`shakehands.protocol`, and one background thread,
the *reader*: it waits for bytes with ``select.poll`` (no limit on file descriptor numbers), feeds
them to the core, puts the messages in a bounded inbox, and runs the timers the core cannot have
(keepalive pings, the closing-handshake timeout). Application threads take messages from the inbox
(:meth:`~.connection.Connection.recv`) and send through the core
(:meth:`~.connection.Connection.send`).

Two locks, and no thread ever waits for the network while holding either:

- the *core lock* covers the sans-I/O core and the outgoing buffer. Whoever uses the core moves
  what it queued (``data_to_send()``) to the end of the outgoing buffer before releasing it;
- the *write lock* is held by the one thread that writes from the front of that buffer, with
  non-blocking sends only: it writes what the kernel takes and leaves the rest.

Over TLS a third, the *TLS lock*, is held around each non-blocking call into the socket (recv,
send, pending, shutdown): OpenSSL does not allow one connection object to be used by two threads
at once (the reader's read and a writer's write), and a TLS 1.3 read may itself write.

A thread in :meth:`~.connection.Connection.send` waits for the socket to become writable (``poll``)
with no lock held, until the buffer is written; the reader only ever tries to write (it does not
even wait for the write lock: the thread holding it looks at the buffer again after releasing it),
and asks ``poll`` for writability while bytes are left over. So the reader keeps reading, answering
and running keepalive whatever the peer does with its receive window. While the buffer is above
``write_limit``, the core answers only the latest ping (``defer_pongs``): a ping flood from a peer
that does not read cannot grow it. A peer that does not read at all is dropped by keepalive: when
the ping times out and our close frame cannot be written either, the TCP connection is aborted
(RST) at once, and a :meth:`~.connection.Connection.send` waiting on it raises
:class:`~shakehands.ConnectionClosedError`. The closing handshake's timeout aborts the same way.

The server's shutdown closes every connection from one thread: it queues each close frame
itself when the core lock is free, and otherwise leaves a request that the thread holding the lock
(busy, so soon back) applies. It never waits for a connection's lock, and starts no thread.

Two rules:

1. Frames leave in the order the core queued them, whichever thread queued them: the core lock
   makes queueing and appending to the outgoing buffer one step, and only its front is written.
2. When the peer's close frame follows messages that the application has not read yet, our close
   frame waits until the application asks for a message that is not there (or closes, or the
   core's :func:`~shakehands.protocol.connection.close_hold_limit` passes: 1 s, or
   ``close_timeout`` if shorter): its answers to those messages leave first. This is the core's
   rule 3, with the same bound as in the asyncio layer.

The inbox is bounded (``max_queue``): when it is full the reader stops reading from the socket
(it keeps its timers), so a peer that sends faster than the application reads is slowed down by
TCP, not buffered. After a failure (a protocol violation, a keepalive timeout) or our half-close,
the reader keeps reading and discarding until the peer's EOF, for at most ``close_timeout`` and
:data:`LINGER_BYTES` bytes: closing a socket with unread bytes would reset the connection and
destroy our close frame before the peer reads it. This module knows nothing about handshakes
(see :mod:`.server` and :mod:`.client`).

Why one module of some 600 lines: the reader loop, the write path and the close requests keep the
invariants above together (which lock covers what, who may wait where); split apart, each half
would hold half of every rule.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import socket
import ssl as ssl_module
import struct
import threading
import time
from collections import deque
from typing import Any

from ..protocol.config import Config, ConfiguredConnection
from ..protocol.connection import Connection as Protocol
from ..protocol.connection import Pong, State, close_hold_limit, ping_payload
from ..protocol.errors import CloseCode, ConnectionClosed
from .messages import Inbox

__all__ = ["SocketProtocol", "PongWaiter", "LINGER_BYTES"]

logger = logging.getLogger("shakehands.sync")

_READ_SIZE = 2**16
#: Bytes read and discarded at most, after a failure or our half-close, waiting for the EOF.
LINGER_BYTES = 4 * 2**20
# How long the reader waits for the application (full inbox, held close frame) at a time while
# bytes wait to be written and no application thread writes them.
_WRITE_RETRY = 0.1
_POLL_IN = select.POLLIN | select.POLLPRI
_POLL_OUT = select.POLLOUT
_WOULD_BLOCK = (
    BlockingIOError,
    InterruptedError,
    ssl_module.SSLWantReadError,
    ssl_module.SSLWantWriteError,
)


def _poll_ms(timeout: float | None) -> int | None:
    if timeout is None:
        return None
    return max(0, math.ceil(timeout * 1000))


class PongWaiter:
    """What :meth:`Connection.ping` returns: wait for the pong with :meth:`wait`."""

    def __init__(self, connection: SocketProtocol) -> None:
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
            raise self._connection._closed_error()
        return self._latency


class SocketProtocol(ConfiguredConnection):
    """Drives one sans-I/O :class:`~shakehands.protocol.connection.Connection` over a socket,
    with a reader thread: the plumbing under :class:`~.connection.Connection`'s blocking API."""

    def __init__(self, sock: socket.socket, protocol: Protocol, config: Config) -> None:
        self.socket = sock
        self.protocol = protocol
        #: The options (:class:`~shakehands.protocol.config.Config`), shared with every
        #: connection of the same server.
        self.config = config
        #: Seconds between keepalive pings, or ``None``: the option, unless the connection
        #: cannot ping (a draft-76 connection has no ping frame).
        self.ping_interval = config.ping_interval
        self._lock = threading.Lock()  # the core lock: the core and the outgoing buffer
        self._write_lock = threading.Lock()  # the one thread writing from the buffer's front
        # TLS only: one OpenSSL connection object must not be used by two threads at once (the
        # reader's SSL_read and a writer's SSL_write; TLS 1.3 reads may write too). Held for one
        # non-blocking call at a time, so never while waiting for the network.
        self._tls_lock = threading.Lock() if isinstance(sock, ssl_module.SSLSocket) else None
        self._outgoing: deque[bytes | memoryview] = deque()
        self._out_size = 0
        self._deferring_pongs = False
        self._half_close_pending = False
        self._aborted = False
        self._queued_total = 0  # bytes ever put in the buffer
        self._written_total = 0  # bytes ever written from it
        self._inbox = Inbox(config.max_queue, self._closed_error)
        self._reader_done = threading.Event()
        self._holding_close = False
        self._hold_deadline: float | None = None
        self._close_called = False
        self._write_shut = False
        self._pings: dict[bytes, PongWaiter] = {}
        self._keepalive_payload: bytes | None = None
        self._keepalive_deadline: float | None = None
        self._next_keepalive: float | None = None
        self._close_deadline: float | None = None
        self._lingered = 0
        # Server shutdown: the close to start, left by a thread that could not take the core
        # lock at once; applied by whichever thread takes it next.
        self._close_requested: tuple[int, str] | None = None
        try:
            self.remote_address: Any = sock.getpeername()
            self.local_address: Any = sock.getsockname()
        except OSError:
            self.remote_address = self.local_address = None
        sock.setblocking(False)
        self._reader = threading.Thread(
            target=self._read_loop, name=f"shakehands-reader-{self.remote_address}", daemon=True
        )

    def _start(self) -> None:
        """Start the reader thread (called once the handshake is done)."""
        if self.ping_interval is not None:
            self._next_keepalive = time.monotonic() + self.ping_interval
        self._reader.start()

    # -----------------------------------------------------------------------------------------
    # The reader thread: bytes in
    # -----------------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        sock = self.socket
        tls_lock = self._tls_lock
        try:
            poller = select.poll()
            poller.register(sock, _POLL_IN)
            polling = _POLL_IN
            # Frames that came with the handshake were parsed already.
            with self._lock:
                events = self.protocol.events_received()
                self._enqueue()
            self._write_out(wait=False)
            self._dispatch(events)
            while True:
                if self._close_requested is not None and not self._close_called:
                    self._start_close(*self._close_requested)
                if self._waiting_for_application():
                    # A full inbox or a held close frame: no reading until the application
                    # moves, but timers run and leftover bytes are retried.
                    timeout = self._timer_timeout()
                    if self._out_size:
                        timeout = _WRITE_RETRY if timeout is None else min(timeout, _WRITE_RETRY)
                    with self._inbox.cond:
                        if self._application_blocks():
                            self._inbox.cond.wait(timeout)
                    if self._out_size:
                        self._write_out(wait=False)
                    if self._run_timers():
                        break
                    continue
                timeout = self._timer_timeout()
                if timeout is not None and timeout <= 0:
                    # Due timers run even while the peer keeps us busy reading (a flood).
                    if self._run_timers():
                        break
                    continue
                mask = _POLL_IN | (_POLL_OUT if self._out_size else 0)
                if mask != polling:
                    poller.modify(sock, mask)
                    polling = mask
                if tls_lock is not None and self._tls_pending():
                    ready = _POLL_IN
                else:
                    try:
                        ready = 0
                        for _, revents in poller.poll(_poll_ms(timeout)):
                            ready |= revents
                    except InterruptedError:
                        continue
                if not ready:
                    continue  # a timer is due
                if ready & _POLL_OUT:
                    self._write_out(wait=False)
                if not ready & ~_POLL_OUT:
                    continue
                try:
                    if tls_lock is None:
                        data = sock.recv(_READ_SIZE)
                    else:
                        with tls_lock:
                            data = sock.recv(_READ_SIZE)
                except _WOULD_BLOCK:
                    continue
                except (OSError, ValueError):
                    data = b""
                if not self._received(data):
                    break
                if self._lingered > LINGER_BYTES:
                    logger.info("peer still sending after the close; dropping the connection")
                    self._abort()
                    break
        except Exception:
            logger.exception("reader thread failed")
        finally:
            with self._lock:
                if self.protocol.state is not State.CLOSED:
                    self.protocol.receive_eof()
                self.protocol.events_received()
                self._write_shut = True
                self._discard_outgoing()
            with self._write_lock, contextlib.suppress(OSError):
                sock.close()
            self._reader_done.set()
            for waiter in self._pings.values():
                waiter._set(None)
            self._pings.clear()
            self._inbox.close()

    def _received(self, data: bytes) -> bool:
        """Feed bytes (or the EOF: ``b""``) to the core; ``False`` ends the reader."""
        with self._lock:
            if self.protocol.state is State.CLOSED:
                self._lingered += len(data)  # discarded: waiting for the peer's EOF
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            events = self.protocol.events_received()
            if self.protocol.close_pending and (
                self._inbox.messages
                or self._inbox.backlog
                or any(type(e) is str or type(e) is bytes for e in events)
            ):
                self._holding_close = True
                self._hold_deadline = time.monotonic() + close_hold_limit(self.close_timeout)
            self._enqueue()
        self._write_out(wait=False)
        self._dispatch(events)
        return bool(data)

    def _dispatch(self, events: list[object]) -> None:
        backlog = self._inbox.backlog
        for event in events:
            kind = type(event)
            if kind is str or kind is bytes:
                backlog.append(event)  # type: ignore[arg-type]
            elif kind is Pong:
                self._on_pong(event.data)  # type: ignore[attr-defined]
        if backlog:
            self._waiting_for_application()  # delivers what fits

    # -----------------------------------------------------------------------------------------
    # Waiting for the application: the inbox and the held close frame
    # -----------------------------------------------------------------------------------------

    def _waiting_for_application(self) -> bool:
        """Whether the reader waits for the application: messages that do not fit in the inbox
        (delivered here as room appears), or a close frame held by rule 2 (released here)."""
        # Closing: what does not fit in the inbox is dropped, not waited for.
        if self._inbox.backlog and self._inbox.deliver(drop_rest=self._close_called):
            return True
        if self._holding_close:
            with self._inbox.cond:
                hold = self._application_blocks()
            if hold:
                return True
            with self._lock:
                self._holding_close = False
                self._hold_deadline = None
                self._enqueue()
            self._write_out(wait=False)
        return False

    def _application_blocks(self) -> bool:
        """Whether the reader must still wait for the application (inbox lock held)."""
        if self._close_called:
            return False
        inbox = self._inbox
        if inbox.full():
            return True
        return (
            self._holding_close
            and (bool(inbox.messages) or not inbox.waiting)
            and self._hold_deadline is not None
            and time.monotonic() < self._hold_deadline
        )

    # -----------------------------------------------------------------------------------------
    # The write path: the outgoing buffer, written from its front
    # -----------------------------------------------------------------------------------------

    def _enqueue(self) -> None:
        """Move what the core queued to the outgoing buffer (call with the core lock held)."""
        out = self.protocol.data_to_send(send_close=not self._holding_close)
        if out and not self._write_shut:
            data = out[0] if len(out) == 1 else b"".join(out)
            self._outgoing.append(data)
            self._out_size += len(data)
            self._queued_total += len(data)
            if self._out_size > self.write_limit and not self._deferring_pongs:
                # RFC 6455 §5.5.3: while the peer does not read, answer only the latest ping.
                self._deferring_pongs = True
                self.protocol.defer_pongs(True)
        if self.protocol.state is State.CLOSED:
            self._closing_handshake_done()

    def _write_some(self) -> bool:
        """Write from the front of the buffer what the kernel takes (write lock held); return
        whether the kernel's buffer is full (bytes are left)."""
        sock = self.socket
        lock = self._lock
        lock.acquire()
        try:
            while True:
                # Core lock held here: take the front chunk, or finish.
                if not self._outgoing or self._write_shut:
                    self._discard_outgoing()
                    if self._half_close_pending and not self._write_shut:
                        self._half_close()
                    self._half_close_pending = False
                    return False
                chunk = self._outgoing[0]
                lock.release()
                try:
                    if self._tls_lock is None:
                        sent = sock.send(chunk)
                    else:
                        with self._tls_lock:
                            sent = sock.send(chunk)
                except _WOULD_BLOCK:
                    return True
                except (OSError, ValueError):
                    # The peer is gone; the reader sees it too and ends the connection.
                    self._write_shut = True
                    self._shutdown_socket(socket.SHUT_RDWR)
                    return False
                finally:
                    lock.acquire()
                self._written_total += sent
                if not self._outgoing or self._outgoing[0] is not chunk:
                    return False  # emptied meanwhile (the connection ended)
                if sent >= len(chunk):
                    self._outgoing.popleft()
                else:
                    self._outgoing[0] = memoryview(chunk)[sent:]
                self._out_size -= sent
                if self._deferring_pongs and self._out_size <= self.write_limit:
                    self._deferring_pongs = False
                    self.protocol.defer_pongs(False)  # queues the latest ping's pong, if any
                    self._enqueue()
        finally:
            if self._write_shut:
                self._discard_outgoing()
            lock.release()

    def _discard_outgoing(self) -> None:
        """Drop the buffer: the connection cannot write any more (core lock held)."""
        self._outgoing.clear()
        self._out_size = 0

    def _write_out(self, *, wait: bool, target: int = 0) -> None:
        """Write the buffer; with ``wait``, until its first ``target`` bytes ever queued are
        written (``send()``), else only what the kernel takes now and without waiting for the
        write lock either.

        Waits (for ``poll`` to say the socket is writable) without holding any lock. Raises
        :class:`~shakehands.ConnectionClosedError` if the connection is aborted meanwhile.
        """
        poller: Any = None
        while self._out_size or self._half_close_pending:
            if not self._write_lock.acquire(blocking=wait):
                # Another thread is writing; it looks at the buffer again after releasing the
                # lock, so it writes what we queued before we got here.
                return
            try:
                full = self._write_some()
            finally:
                self._write_lock.release()
            if not full:
                continue  # look again: bytes queued while we held the lock
            if not wait or self._written_total >= target:
                return  # the reader asks poll for writability while bytes are left
            if self._aborted or self._reader_done.is_set():
                break
            if poller is None:
                poller = select.poll()
                try:
                    poller.register(self.socket, _POLL_OUT)
                except (OSError, ValueError):
                    continue  # closed under us: the next round sees it
            with contextlib.suppress(OSError, ValueError):
                poller.poll(1000)  # the abort wakes us too (POLLHUP); 1 s just in case
        if wait and self._written_total < target:
            raise self._closed_error()  # dropped before it was all written

    def _closing_handshake_done(self) -> None:
        """The core is CLOSED (core lock held): the server half-closes once the buffer is out,
        and both wait for the peer's EOF."""
        if self._close_deadline is None:
            self._close_deadline = time.monotonic() + self.config.close_limit
        if self.protocol.close_expected() and not self._write_shut:
            self._half_close_pending = True

    def _half_close(self) -> None:
        # RFC 6455 §7.1.1: the server closes TCP first. A half-close, so that the peer reads
        # our last bytes before its EOF ends the connection (no RST on unread data).
        self._write_shut = True
        self._half_close_pending = False
        if isinstance(self.socket, ssl_module.SSLSocket):
            self._shutdown_socket(socket.SHUT_RDWR)
        else:
            self._shutdown_socket(socket.SHUT_WR)

    def _tls_pending(self) -> bool:
        """Whether OpenSSL holds decrypted bytes not read yet (TLS only)."""
        assert self._tls_lock is not None and isinstance(self.socket, ssl_module.SSLSocket)
        with self._tls_lock, contextlib.suppress(OSError, ValueError):
            return self.socket.pending() > 0
        return False

    def _shutdown_socket(self, how: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self._tls_lock is None:
                self.socket.shutdown(how)
            else:
                with self._tls_lock:
                    self.socket.shutdown(how)

    def _abort(self) -> None:
        """Drop the TCP connection now (RST); wakes every thread waiting on the socket.

        Takes neither the core lock nor the write lock (the server's shutdown calls it on many
        connections; over TLS only the TLS lock, for one non-blocking call): the writers see
        ``_write_shut`` and the reader, woken, ends and empties the buffer.
        """
        self._aborted = True
        self._write_shut = True
        with contextlib.suppress(OSError, ValueError):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._shutdown_socket(socket.SHUT_RDWR)

    # -----------------------------------------------------------------------------------------
    # Failing and closing
    # -----------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        """Raise if messages cannot be sent (core lock held)."""
        if self._close_requested is not None and not self._close_called:
            self._close_locked(*self._close_requested)  # written by the next flush
        if self.protocol.state is not State.OPEN:
            raise self._closed_error()

    def _fail(self, code: int, reason: str) -> None:
        with self._lock:
            if self.protocol.state is State.OPEN:
                self.protocol.fail(code, reason)
            self._enqueue()
        self._write_out(wait=False)

    def _start_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Queue our close frame (after everything accepted before it); never blocks long."""
        with self._lock:
            self._close_locked(code, reason)
        self._inbox.wake()
        self._write_out(wait=False)

    def _close_locked(self, code: int, reason: str) -> None:
        self._close_called = True
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._close_deadline = time.monotonic() + self.config.close_limit
        self._holding_close = False
        self._enqueue()

    def _try_start_close(self, code: int, reason: str) -> bool:
        """:meth:`_start_close` if the core lock is free; else leave the request to the thread
        that holds it (the reader or a sender applies it when they next take the lock).

        For the server's shutdown, which closes many connections from one thread while their
        own threads compete for the GIL: nothing here waits for a lock. Returns whether the
        close frame was queued.
        """
        self._close_requested = (code, reason)
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._close_locked(code, reason)
        finally:
            self._lock.release()
        self._inbox.wake(blocking=False)
        self._write_out(wait=False)
        return True

    # -----------------------------------------------------------------------------------------
    # Pings and keepalive
    # -----------------------------------------------------------------------------------------

    def _send_ping(self, data: bytes | None) -> PongWaiter:
        with self._lock:
            self._check_open()
            data = ping_payload(data, self._pings)
            waiter = PongWaiter(self)
            self.protocol.send_ping(data)
            self._pings[data] = waiter
            self._enqueue()
            target = self._queued_total
        self._write_out(wait=True, target=target)
        return waiter

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

    def _timer_timeout(self) -> float | None:
        first = None
        for t in (
            self._close_deadline,
            self._keepalive_deadline,
            self._next_keepalive,
            self._hold_deadline,
        ):
            if t is not None and (first is None or t < first):
                first = t
        return None if first is None else max(0.0, first - time.monotonic())

    def _run_timers(self) -> bool:
        """Run the timers that are due; ``True`` ends the reader (the peer is unresponsive)."""
        now = time.monotonic()
        if self._close_deadline is not None and now >= self._close_deadline:
            logger.info("closing handshake timed out; dropping the connection")
            self._abort()
            return True
        if self._keepalive_deadline is not None and now >= self._keepalive_deadline:
            reason = f"keepalive ping not answered within {self.ping_timeout:g} s"
            logger.info("%s; closing the connection", reason)
            self._keepalive_deadline = None
            self._next_keepalive = None
            self._fail(CloseCode.INTERNAL_ERROR, reason)
            if self._out_size:
                # Our close frame cannot even be written: the peer does not read. Abort.
                logger.info("peer not reading; aborting the connection")
                self._abort()
                return True
            return False
        if self._next_keepalive is not None and now >= self._next_keepalive:
            assert self.ping_interval is not None
            self._next_keepalive = now + self.ping_interval
            with self._lock:
                if self.protocol.state is State.OPEN and self._keepalive_payload is None:
                    self._keepalive_payload = os.urandom(4)
                    self.protocol.send_ping(self._keepalive_payload)
                    self._enqueue()
                    if self.ping_timeout is not None:
                        self._keepalive_deadline = now + self.ping_timeout
            self._write_out(wait=False)
        return False

    # -----------------------------------------------------------------------------------------
    # Introspection
    # -----------------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The connection's state."""
        return self.protocol.state

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

    def _closed_error(self) -> ConnectionClosed:
        return self.protocol.close_exception()
