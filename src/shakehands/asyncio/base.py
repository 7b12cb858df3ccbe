"""Transport plumbing shared by every asyncio connection class.

Twin of :mod:`shakehands.sync.base` (what a socket and a reader thread do for the blocking layer,
an asyncio transport and the event loop do here).

:class:`TransportProtocol` owns an ``asyncio.Transport`` and a sans-I/O connection: it feeds the
bytes read to the core, writes what the core queued, closes the TCP connection when the core says
so (the server first, RFC 6455 §7.1.1), and runs the timers the core cannot have: keepalive pings,
the closing-handshake timeout, the abort of a peer that will not let go. Subclasses receive the
core's events through :meth:`TransportProtocol._on_event`; it knows nothing about coroutines or
callbacks. (Some 500 lines: reading, writing, closing and the timers act on the same transport
state, e.g. the lingering close reads what keepalive and the close timeout also watch.)
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from typing import Any, cast

from ..protocol.config import Config, ConfiguredConnection
from ..protocol.connection import (
    Close,
    Connection,
    Ping,
    Pong,
    State,
    close_hold_limit,
    ping_payload,
)
from ..protocol.errors import CloseCode, ConnectionClosed

__all__ = ["TransportProtocol", "HoldsCloseForReader", "KeepaliveWheel", "write_chunks"]

logger = logging.getLogger("shakehands")

#: Chunks at least this large go to the transport on their own (the core queues large payloads
#: apart from their headers); smaller ones are joined into one write.
_LARGE_CHUNK = 2**16


def write_chunks(transport: asyncio.Transport, out: list[bytes]) -> None:
    """Write what the core queued: one ``write`` for small frames, large payloads uncopied.

    A large payload is passed as a ``memoryview``, so that the transport keeps (or copies)
    only the part the socket did not take at once, instead of slicing a copy first.
    """
    if len(out) == 1:
        chunk = out[0]
        transport.write(memoryview(chunk) if len(chunk) >= _LARGE_CHUNK else chunk)
        return
    small: list[bytes] = []
    for chunk in out:
        if len(chunk) >= _LARGE_CHUNK:
            if small:
                transport.write(b"".join(small))
                small = []
            transport.write(memoryview(chunk))
        else:
            small.append(chunk)
    if small:
        transport.write(small[0] if len(small) == 1 else b"".join(small))


class _Bucket(dict["TransportProtocol", None]):
    """The connections of one :class:`KeepaliveWheel` whose keepalive falls due at ``due``
    (a dict used as an ordered set: about half the bytes per entry of a set)."""

    __slots__ = ("wheel", "due")

    def __init__(self, wheel: KeepaliveWheel, due: float) -> None:
        super().__init__()
        self.wheel = wheel
        self.due = due


class KeepaliveWheel:
    """The keepalive timer of all the connections of one event loop with one ``ping_interval``.

    One ``TimerHandle`` for them all instead of one per connection (a handle, its context and
    a bound method: about 240 bytes per idle connection on asyncio's loop, 620 on uvloop's).
    Connections are enrolled in buckets of ``tick`` seconds (1/16 of the interval, at most 1 s):
    a connection enrolled at ``t`` is due between ``t + interval`` and ``t + interval + tick``,
    never earlier. All of them have the same interval, so buckets are made in the order they
    fall due: a FIFO, and the timer waits for the first bucket only. When it fires, it calls
    ``_keepalive()`` of every connection of that bucket, which enrolls it again (or not, once
    the connection is no longer open). ``connection_lost`` takes a connection out, and the
    wheel of an event loop and interval lives while it holds connections.
    """

    __slots__ = ("loop", "interval", "tick", "buckets", "size", "handle")

    #: The wheels in use, by event loop and interval.
    _wheels: dict[tuple[asyncio.AbstractEventLoop, float], KeepaliveWheel] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.tick = min(interval / 16, 1.0)
        self.buckets: deque[_Bucket] = deque()
        #: How many connections are enrolled.
        self.size = 0
        self.handle: asyncio.TimerHandle | None = None

    @classmethod
    def enroll(cls, connection: TransportProtocol, interval: float) -> _Bucket:
        """Enroll ``connection`` for its next keepalive, ``interval`` seconds from now."""
        loop = connection.loop
        wheel = cls._wheels.get((loop, interval))
        if wheel is None:
            # Forget the wheels of closed event loops (a loop closed while connections were
            # still enrolled never told them: asyncio.run() in a loop, tests), so that at most
            # the last such loop stays referenced until a new wheel is made.
            for key in [key for key in cls._wheels if key[0].is_closed()]:
                del cls._wheels[key]
            wheel = cls._wheels[loop, interval] = cls(loop, interval)
        return wheel._add(connection)

    def _add(self, connection: TransportProtocol) -> _Bucket:
        buckets = self.buckets
        due = self.loop.time() + self.interval
        if not buckets or buckets[-1].due < due:
            buckets.append(_Bucket(self, due + self.tick))
        bucket = buckets[-1]
        bucket[connection] = None
        self.size += 1
        if self.handle is None:
            self.handle = self.loop.call_at(buckets[0].due, self._fire)
        return bucket

    def remove(self, connection: TransportProtocol, bucket: _Bucket) -> None:
        """Take ``connection`` out (it is in ``bucket``); the last one out stops the timer."""
        if connection not in bucket:
            return
        del bucket[connection]
        self.size -= 1
        if not self.size:
            self._stop()

    def _stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.buckets.clear()
        key = (self.loop, self.interval)
        if self._wheels.get(key) is self:
            del self._wheels[key]

    def _fire(self) -> None:
        self.handle = None
        buckets = self.buckets
        if buckets:
            bucket = buckets.popleft()
            self.size -= len(bucket)
            for connection in list(bucket):
                connection._keepalive_bucket = None
                try:
                    connection._keepalive()
                except Exception as exc:  # one connection's failure must not stop the others
                    self.loop.call_exception_handler(
                        {"message": "keepalive failed", "exception": exc, "protocol": connection}
                    )
        while buckets and not buckets[0]:
            buckets.popleft()  # every connection of it was lost
        if not self.size:
            self._stop()
        elif self.handle is None:
            self.handle = self.loop.call_at(buckets[0].due, self._fire)


class TransportProtocol(ConfiguredConnection, asyncio.Protocol):
    """An ``asyncio.Protocol`` driving one sans-I/O :class:`Connection`."""

    protocol: Connection
    transport: asyncio.Transport

    # Slots, not a per-instance dict: past 30 attributes CPython gives each instance a full
    # dict (1.5 KiB), a third of an idle connection. "__dict__" stays in the list so that
    # applications may still set attributes of their own (the dict is created then only).
    __slots__ = (
        "protocol",
        "transport",
        "loop",
        "config",
        "ping_interval",
        "_closed_future",
        "_lost",
        "_writing_paused",
        "_drain_list",
        "_keepalive_bucket",
        "_keepalive_ping",
        "_shutting_down",
        "_hold_close",
        "_eof_sent",
        "broadcast_policy",
        "broadcast_dropped",
        "__dict__",
        "__weakref__",
    )

    # Attributes that most connections never set, and that are read once or twice in a
    # connection's life (not per message or per broadcast): class defaults, not slots (8 bytes
    # each per connection, issue 14). The few connections that set one get an instance dict
    # then (a lingering close, a client's wait for the server's close, an abort timer, an
    # application's ping()). Reading a class default costs ~4x a slot on CPython 3.11, which
    # is why broadcast_policy (read per broadcast delivery) stays a slot.
    _abort_handle: asyncio.TimerHandle | None = None
    _lingered = 0
    _client_wait_handle: asyncio.TimerHandle | None = None
    # The pings of ping() waiting for their pong, by payload: None until the first ping.
    _pings: dict[bytes, tuple[float, asyncio.Future[float]]] | None = None

    def __init__(self, protocol: Connection, config: Config) -> None:
        self.protocol = protocol
        self.loop = asyncio.get_running_loop()
        #: The options (:class:`~shakehands.protocol.config.Config`), shared with every
        #: connection of the same server.
        self.config = config
        #: Seconds between keepalive pings, or ``None``: the option, unless the connection
        #: cannot ping (a draft-76 connection has no ping frame).
        self.ping_interval = config.ping_interval
        # closed_future is created on first use only (idle memory: most connections never
        # need it); _lost says the same for code that must not create it.
        self._closed_future: asyncio.Future[None] | None = None
        self._lost = False
        self._writing_paused = False
        # The futures waiting for resume_writing: None until the first (_drain_waiters).
        self._drain_list: list[asyncio.Future[None]] | None = None
        # The bucket of the KeepaliveWheel this connection is enrolled in, or None.
        self._keepalive_bucket: _Bucket | None = None
        # The keepalive ping waiting for its pong: (payload, the ping_timeout timer or None).
        self._keepalive_ping: tuple[bytes, asyncio.TimerHandle | None] | None = None
        self._shutting_down = False
        self._hold_close = False
        self._eof_sent = False
        #: This connection's slow-client policy for broadcasts (``None``: the broadcast's own;
        #: see :func:`shakehands.set_slow_client_policy`).
        self.broadcast_policy: Any = None
        #: What broadcasts dropped for this connection, once they dropped something (see
        #: :func:`shakehands.broadcast_counters`).
        self.broadcast_dropped: Any = None

    @property
    def _drain_waiters(self) -> list[asyncio.Future[None]]:
        """The futures waiting for ``resume_writing`` (append to it): made on first use."""
        waiters = self._drain_list
        if waiters is None:
            waiters = self._drain_list = []
        return waiters

    @property
    def closed_future(self) -> asyncio.Future[None]:
        """A future done when the TCP connection is lost."""
        future = self._closed_future
        if future is None:
            future = self._closed_future = self.loop.create_future()
            if self._lost:
                future.set_result(None)
        return future

    # -----------------------------------------------------------------------------------------
    # asyncio.Protocol
    # -----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=self.write_limit)

    def data_received(self, data: bytes) -> None:
        if self._eof_sent:
            self._linger(len(data))
            return
        self.protocol.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        self.protocol.receive_eof()
        self._process()
        # Keep the transport: _process closes it once what we owe the peer is written. Not
        # under TLS: there is no half-close, the transport closes anyway, and asyncio warns
        # that returning True "has no effect when using ssl".
        return self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        bucket = self._keepalive_bucket
        if bucket is not None:
            self._keepalive_bucket = None
            bucket.wheel.remove(self, bucket)
        ping = self._keepalive_ping
        for handle in (
            None if ping is None else ping[1],
            self._abort_handle,
            self._client_wait_handle,
        ):
            if handle is not None:
                handle.cancel()
        if self.protocol.state is not State.CLOSED:
            self.protocol.receive_eof()
        self.protocol.events_received()
        self._lost = True
        future = self._closed_future
        if future is not None and not future.done():
            future.set_result(None)
        pings = self._pings
        if pings is not None:
            # Made only for them: most connections never ping (2 us per connection, issue 14).
            closed = self.protocol.close_exception()
            self._pings = None
            for _, waiter in pings.values():
                if not waiter.done():
                    waiter.set_exception(closed)
                    waiter.exception()  # mark retrieved: nobody may be waiting
        self._wake_drain_waiters()
        self._on_connection_lost()

    def pause_writing(self) -> None:
        self._writing_paused = True
        self.protocol.defer_pongs(True)

    def resume_writing(self) -> None:
        self._writing_paused = False
        self.protocol.defer_pongs(False)
        self._flush()
        self._wake_drain_waiters()

    def _wake_drain_waiters(self) -> None:
        waiters, self._drain_list = self._drain_list, None
        if not waiters:
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -----------------------------------------------------------------------------------------
    # Hooks for subclasses
    # -----------------------------------------------------------------------------------------

    def _on_event(self, event: object) -> None:
        """Handle one event of the core (messages, handshake events)."""
        raise NotImplementedError

    def _on_connection_lost(self) -> None:
        """The TCP connection is gone."""

    # -----------------------------------------------------------------------------------------
    # Core plumbing
    # -----------------------------------------------------------------------------------------

    #: Whether the application answers messages later (coroutines) rather than during dispatch
    #: (callbacks): then a close frame owed by the core waits one loop iteration, so that the
    #: answers to messages received before it leave first.
    answers_later = False

    def _process(self) -> None:
        """Dispatch the core's events, write its output, close when it says so."""
        protocol = self.protocol
        delivered = False
        for event in protocol.events_received():
            kind = type(event)
            if kind is Pong:
                self._on_pong(event.data)  # type: ignore[union-attr]
            elif kind is Ping:
                pass  # the core already queued the pong
            else:
                delivered = delivered or kind is str or kind is bytes
                self._on_event(event)
        if (
            self.answers_later
            and protocol.close_pending
            and not self._hold_close
            and (delivered or self._has_unread_messages())
        ):
            self._hold_close = True
            self.loop.call_soon(self._release_close)
        self._flush()
        if protocol.state is State.CLOSED:
            self._closing_handshake_done()

    def _has_unread_messages(self) -> bool:
        """Whether received messages wait for the application (coroutine API only)."""
        return False

    def _release_close(self) -> None:
        if not self._hold_close or self._close_waits_for_reader():
            return
        self._hold_close = False
        self._flush()
        if self.protocol.state is State.CLOSED:
            self._closing_handshake_done()

    def _close_waits_for_reader(self) -> bool:
        """Whether the owed close frame should wait longer for the application to read."""
        return False

    def _flush(self) -> None:
        out = self.protocol.data_to_send(send_close=not self._hold_close)
        if out and not self.transport.is_closing():
            write_chunks(self.transport, out)

    def _closing_handshake_done(self) -> None:
        if self.protocol.close_expected():
            self._shutdown_transport()
        elif self._client_wait_handle is None and self.close_timeout is not None:
            # Client: the server should close TCP now; close it ourselves if it does not.
            self._client_wait_handle = self.loop.call_later(
                self.close_timeout, self._shutdown_transport
            )

    #: The lingering close: after a refused handshake or a failed connection, the most bytes the
    #: peer may still send (read and dropped) before we close anyway. It covers what a peer that
    #: was still talking has in flight when our answer reaches it (socket buffers: a few hundred
    #: KiB on common systems), while a peer that never stops costs at most this much reading;
    #: the time is bounded by ``close_timeout`` (the abort timer).
    linger_limit = 2**20

    def _shutdown_transport(self) -> None:
        """Close the TCP connection, gracefully if possible, by force after ``close_timeout``.

        After a failure (a refused handshake, a protocol violation) the close is a lingering
        one: half-close, then read and drop what the peer still sends until its EOF, at most
        ``linger_limit`` bytes and ``close_timeout`` seconds, then close. Closing a socket with
        unread bytes sends a RST, which destroys our answer in the peer's receive buffer.
        """
        if self._shutting_down:
            return
        if self._eof_sent and not self.protocol.eof_received:
            # Lingering: the peer's EOF, linger_limit or the abort timer ends it.
            return
        self._shutting_down = True
        transport = self.transport
        failed = (
            self.protocol.failure is not None
            or getattr(self.protocol, "handshake_exc", None) is not None
        )
        if (
            failed
            and not self._eof_sent
            and not self.protocol.eof_received
            and transport.can_write_eof()
        ):
            # No write_eof on TLS transports: they close at once, as below.
            transport.write_eof()
            self._eof_sent = True
            self._shutting_down = False
            if not transport.is_reading():
                # Paused (a full queue, backpressure): the peer's EOF must be read now.
                transport.resume_reading()
        else:
            transport.close()
            if not transport.get_write_buffer_size():
                # Nothing left to write: the transport closes the socket at once, so there is
                # no peer to wait for and no abort timer to arm (a timer per connection costs
                # handshakes per second).
                return
        self._start_abort_timer()

    def _linger(self, size: int) -> None:
        """Drop ``size`` bytes read after our half-close; close past ``linger_limit``."""
        self._lingered += size
        if self._lingered > self.linger_limit and not self.transport.is_closing():
            logger.debug("lingering close: the peer sent over %d bytes; closing", self.linger_limit)
            self._shutting_down = True
            self.transport.close()

    def _start_abort_timer(self) -> None:
        if self._abort_handle is None:
            self._abort_handle = self.loop.call_later(self.config.close_limit, self.transport.abort)

    # -----------------------------------------------------------------------------------------
    # What broadcast() writes through (asyncio/broadcast.py): it queues frames on the core and
    # calls these, and never touches the transport or this class's private state.
    # -----------------------------------------------------------------------------------------

    def can_take_messages(self) -> bool:
        """Open, with no close frame owed and the transport not closing: a message queued now
        will be sent."""
        protocol = self.protocol
        return (
            protocol.state is State.OPEN
            and not protocol.close_pending
            and not self.transport.is_closing()
        )

    def write_buffer_size(self, size_if_over: int) -> int:
        """Bytes waiting in the transport's write buffer, or 0 while it is under ``write_limit``
        and ``size_if_over`` is at least ``write_limit`` (the sum over the buffer costs as much
        as a delivery: skip it when the answer cannot matter)."""
        if not self._writing_paused and size_if_over >= self.write_limit:
            return 0
        return self.transport.get_write_buffer_size()

    def write_queued(self) -> None:
        """Write now what the core has queued (never an owed close frame: see rule 3)."""
        out = self.protocol.data_to_send(send_close=False)
        if out:
            write_chunks(self.transport, out)

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection from our side: close frame ``code`` behind what is buffered,
        then the TCP connection, aborted after ``close_timeout`` if the peer never reads."""
        self._fail(code, reason)

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection from our side (keepalive timeout, handler error, shutdown)."""
        if self.protocol.state is State.OPEN:
            self.protocol.fail(code, reason)
        self._flush()
        self.transport.close()
        self._start_abort_timer()

    def _start_close(self, code: int | None, reason: str) -> None:
        """Send a close frame and arm the timeout that aborts a peer that never answers."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
        if self.protocol.state is not State.CLOSED or not self.protocol.close_expected():
            self._start_abort_timer()
        else:
            self._shutdown_transport()

    # -----------------------------------------------------------------------------------------
    # Pings and keepalive
    # -----------------------------------------------------------------------------------------

    def _send_ping(self, data: bytes | None) -> asyncio.Future[float]:
        pings = self._pings
        data = ping_payload(data, () if pings is None else pings)
        if self.protocol.state is not State.OPEN:
            raise self.protocol.close_exception()
        waiter: asyncio.Future[float] = self.loop.create_future()
        self.protocol.send_ping(data)
        self._flush()
        if pings is None:
            pings = self._pings = {}
        pings[data] = (self.loop.time(), waiter)
        return waiter

    def _on_pong(self, data: bytes) -> None:
        ping = self._keepalive_ping
        if ping is not None and data == ping[0]:
            self._keepalive_ping = None
            if ping[1] is not None:
                ping[1].cancel()
        pings = self._pings
        if pings and data in pings:
            # A pong answers its ping and every earlier one (RFC 6455 §5.5.3).
            now = self.loop.time()
            for payload in list(pings):
                sent, waiter = pings.pop(payload)
                if not waiter.done():
                    waiter.set_result(now - sent)
                if payload == data:
                    break

    def _start_keepalive(self) -> None:
        if self.ping_interval is not None and self._keepalive_bucket is None and not self._lost:
            self._keepalive_bucket = KeepaliveWheel.enroll(self, self.ping_interval)

    def _keepalive(self) -> None:
        """Called by the :class:`KeepaliveWheel` every ``ping_interval``: ping, enroll again."""
        if self.protocol.state is not State.OPEN:
            return
        if self._keepalive_ping is None:
            payload = os.urandom(4)
            self._keepalive_ping = (payload, None)
            self.protocol.send_ping(payload)
            self._flush()
            if self.ping_timeout is not None and self._keepalive_ping is not None:
                self._keepalive_ping = (
                    payload,
                    self.loop.call_later(self.ping_timeout, self._keepalive_timeout),
                )
        self._start_keepalive()

    def _keepalive_timeout(self) -> None:
        reason = f"keepalive ping not answered within {self.ping_timeout:g} s"
        logger.info("%s; closing the connection", reason)
        self._fail(CloseCode.INTERNAL_ERROR, reason)

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
        if self.protocol.state is not State.CLOSED and not self._lost:
            return None
        return self.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        """The peer's close reason once closed, else ``None``."""
        if self.protocol.state is not State.CLOSED and not self._lost:
            return None
        return self.protocol.close_reason

    @property
    def remote_address(self) -> Any:
        """The peer's address, as the socket reports it."""
        return self.transport.get_extra_info("peername")

    @property
    def local_address(self) -> Any:
        """This end's address."""
        return self.transport.get_extra_info("sockname")

    def _closed_error(self) -> ConnectionClosed:
        return self.protocol.close_exception()

    def _handle_close_event(self, event: Close) -> None:
        """Subclasses call this for a :class:`Close` event if they care; nothing to do here."""


class HoldsCloseForReader:
    """Rule 3 of the core for the front ends whose application reads later (coroutines, ASGI
    apps): an owed close frame waits while received messages are unread, at most
    :func:`~shakehands.protocol.connection.close_hold_limit` (1 s, or ``close_timeout``).

    Mixed in before :class:`TransportProtocol`; the class declares the two slots
    ``_close_hold_timer`` (``None``) and ``_close_hold_expired`` (``False``).
    """

    __slots__ = ()

    _close_hold_timer: asyncio.TimerHandle | None
    _close_hold_expired: bool

    def _close_waits_for_reader(self: Any) -> bool:
        if (
            not self._has_unread_messages()
            or self._close_hold_expired
            or self.transport.is_closing()
        ):
            return False
        if self._close_hold_timer is None:
            self._close_hold_timer = self.loop.call_later(
                close_hold_limit(self.close_timeout), self._close_hold_expire
            )
        return True

    def _close_hold_expire(self: Any) -> None:
        self._close_hold_timer = None
        self._close_hold_expired = True
        self._release_close()

    def _cancel_close_hold(self: Any) -> None:
        if self._close_hold_timer is not None:
            self._close_hold_timer.cancel()
            self._close_hold_timer = None
